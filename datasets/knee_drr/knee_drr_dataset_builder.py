"""knee_drr: cone-beam DRRs of leg CTs with contour and contour+bone segmentations.

Build (no apache_beam needed):
    python main.py --mode=build --config=configs/ctm.py:cpu        # knee_drr/phantom_64
or from Python:
    import datasets.knee_drr.knee_drr_dataset_builder  # registers 'knee_drr'
    tfds.builder('knee_drr/phantom_64', data_dir=...).download_and_prepare()
"""
import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from score_sde_knee.xray import drr
from score_sde_knee.utils import files
from score_sde_knee.xray import geometry as geometry_lib
from score_sde_knee.xray import phantom
from score_sde_knee.utils import progress

_SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass
class KneeDrrConfig(tfds.core.BuilderConfig):
  """What to scan and how. Every field changes the bytes of the data set."""
  source: str = 'phantom'         # phantom | ct (real CTs from manual_dir)
  num_patients: int = 55          # phantom only; ct uses every case in manual_dir
  detector: int = 256             # detector pixels per side, same field of view at any size
  num_views: int = 60             # 0, 6, ..., 354 degrees
  spacing_mm: float = 1.0         # voxel size of the phantom / of resampled CTs
  bone_threshold_hu: float = drr.BONE_THRESHOLD_HU
  split_by: str = 'patient'       # patient (no leakage) | image (the paper's split)
  seed: int = 0                   # first phantom seed; also seeds the image split


def split_patients(ids: list[str], seed: int) -> dict[str, list[str]]:
  """9:1:1 by patient, deterministic, at least one patient per split when n >= 3."""
  if len(ids) < 3:
    raise ValueError(f'knee_drr needs >= 3 patients for train/validation/test, got {len(ids)}')
  order = np.random.default_rng(seed).permutation(len(ids))
  n_hold = max(1, round(len(ids) / 11))
  test = sorted(ids[i] for i in order[:n_hold])
  val = sorted(ids[i] for i in order[n_hold:2 * n_hold])
  train = sorted(ids[i] for i in order[2 * n_hold:])
  return {'train': train, 'validation': val, 'test': test}


def split_images(ids: list[str], num_views: int, seed: int) -> dict[str, list[tuple]]:
  """The paper's split: 9:1:1 over all (patient, view) pairs; views of a patient leak."""
  pairs = [(p, v) for p in ids for v in range(num_views)]
  order = np.random.default_rng(seed).permutation(len(pairs))
  n_hold = max(1, round(len(pairs) / 11))
  pick = lambda idx: sorted(pairs[i] for i in idx)
  return {'test': pick(order[:n_hold]), 'validation': pick(order[n_hold:2 * n_hold]),
          'train': pick(order[2 * n_hold:])}


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for knee_drr."""

  # The default. 1.1.0 and 1.0.0 stay buildable (`knee_drr/phantom_64:1.1.0`, or
  # config.data.version='1.1.0') so that runs trained on them can be evaluated on the
  # data they were trained on.
  VERSION = tfds.core.Version('2.0.0')
  SUPPORTED_VERSIONS = [tfds.core.Version('1.1.0'), tfds.core.Version('1.0.0')]
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '1.1.0': "Phantom anatomy revision 2: each shaft's marrow canal reaches into the "
               'metaphysis; 1.0.0 closed it with a 5 mm cortical plug, a bright band across '
               'every shaft in the DRRs. ct_256 is unchanged.',
      '2.0.0': 'Phantom anatomy revision 3: the femur, tibia, fibula and patella are the '
               "bone surfaces of a real adult leg (Rajagopal et al. 2016), smoothed, "
               'deformed per patient and posed by the model\'s knee (flexion 0-15 deg), '
               'with cortex, trabecular texture and marrow laid out by depth below the '
               'surface. ct_256: the scanner table is removed and each leg is its own '
               'patient, centred on the orbit (<case>_left and <case>_right for a CT of '
               'both legs, in the same split).',
  }
  # knee_drr version -> phantom.make_phantom's revision.
  PHANTOM_REVISION = {'1.0.0': 1, '1.1.0': 2, '2.0.0': 3}
  BUILDER_CONFIGS = [
      KneeDrrConfig(name='phantom_64', num_patients=33, detector=64, spacing_mm=2.0,
                    description='CPU scale: 33 procedural phantoms, 60 views, 64x64 '
                                '(same field of view as 256x256), 2 mm voxels.'),
      KneeDrrConfig(name='phantom_256', num_patients=55, detector=256, spacing_mm=1.0,
                    description='Paper scale: 55 procedural phantoms x 60 views, 256x256.'),
      KneeDrrConfig(name='ct_256', source='ct', detector=256, spacing_mm=1.0,
                    description='Real leg CTs from manual_dir (e.g. SMIR), 60 views, '
                                '256x256.'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Only the `ct_256` config reads manual_dir (the phantom configs need nothing).
  The paper used 55 lower-limb CTs of the SICAS Medical Image Repository (SMIR, "Virtual
  Skeleton Database", https://www.smir.ch), which must be requested and downloaded by hand.
  Place one case per file or per DICOM series folder in manual_dir
  (default: <data_dir>/downloads/manual/):
      manual_dir/case001.nii.gz      NIfTI
      manual_dir/case002.mha         MetaImage (.mha or .mhd + raw)
      manual_dir/case003.nrrd        NRRD
      manual_dir/case004/            a folder holding one DICOM series
  Each volume is read in HU (DICOM rescale applied), resampled to 1 mm isotropic voxels and
  oriented with z along the leg; the knee should be near the volume's centre. Cases are
  sorted by name and split 9:1:1 by case. From version 2.0.0 on, the scanner table is
  removed and each leg is centred on the orbit; a CT of both legs gives two patients,
  <case>_left and <case>_right, which stay in the same split.
  """

  def __init__(self, *, file_format: str | tfds.core.FileFormat | None = None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    # New builds are ArrayRecord, which tfds.data_source (and so Grain) reads with random
    # access and no TensorFlow. A data set already on disk keeps the format it was built
    # in (dataset_info.json); tfrecord only on request.
    if file_format is None and not self.is_prepared():
      self.info.set_file_format(tfds.core.FileFormat.ARRAY_RECORD, override=True)

  def _info(self) -> tfds.core.DatasetInfo:
    n = self.builder_config.detector
    mask = lambda: tfds.features.Tensor(shape=(n, n, 1), dtype=np.float32,
                                        encoding=tfds.features.Encoding.ZLIB)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': mask(),
            'contour': mask(),
            'contour_bone': mask(),
            'patient_id': tfds.features.Text(),
            'angle_deg': np.float32,
        }),
        supervised_keys=None,
        homepage='https://arxiv.org/abs/2404.03541',
    )

  # ---- patients ---------------------------------------------------------------------------

  def _patients(self, dl_manager) -> dict[str, object]:
    """patient id -> what `_volume` needs to make its HU volume."""
    cfg = self.builder_config
    if cfg.source == 'phantom':
      return {f'phantom_{cfg.seed + i:04d}': cfg.seed + i for i in range(cfg.num_patients)}
    if cfg.source == 'ct':
      from score_sde_knee.xray import ct_io  # SimpleITK only needed for real CTs.
      return dict(ct_io.find_ct_cases(os.fspath(dl_manager.manual_dir)))
    raise ValueError(f'knee_drr config {cfg.name}: source must be phantom or ct, '
                     f'got {cfg.source!r}')

  def _volume(self, what) -> tuple[np.ndarray, tuple]:
    cfg = self.builder_config
    if cfg.source == 'phantom':
      p = phantom.make_phantom(int(what), spacing_mm=cfg.spacing_mm,
                               revision=self.PHANTOM_REVISION[str(self.version)])
      return p.hu, p.spacing_mm
    from score_sde_knee.xray import ct_io
    ct = ct_io.load_ct(what, spacing_mm=cfg.spacing_mm)
    return ct.hu, ct.spacing_mm

  def _split_legs(self) -> bool:
    """ct_256 from 2.0.0 on: table removed, one centred patient per leg (xray/legs.py).
    Earlier versions scan each CT as it is, so their data stay as they were built."""
    return self.builder_config.source == 'ct' and self.version >= '2.0.0'

  def _scan(self, patient_id: str, what, cache_dir: str) -> list[str]:
    """Scans one case into cache_dir/<id>.npz unless an earlier run already did; returns
    the patient ids it gave (one, or one per leg: see `_scan_legs`)."""
    if self._split_legs():
      return self._scan_legs(patient_id, what, cache_dir)
    path = os.path.join(cache_dir, f'{patient_id}.npz')
    if not os.path.exists(path):
      self._write_scan(path, *self._volume(what))
    return [patient_id]

  def _scan_legs(self, case_id: str, path: str, cache_dir: str) -> list[str]:
    """A CT of one leg keeps the case id; of two legs gives <id>_right and <id>_left.
    <id>.legs.json, written last, lists them with the notes of what was done."""
    done = os.path.join(cache_dir, f'{case_id}.legs.json')
    if os.path.exists(done):
      with open(done, encoding='utf-8') as f:
        return json.load(f)['patients']
    from score_sde_knee.xray import ct_io, legs  # SimpleITK only needed for real CTs.
    cases = legs.split_legs(ct_io.load_ct(path, spacing_mm=self.builder_config.spacing_mm))
    ids = [case_id if c.side == 'single' else f'{case_id}_{c.side}' for c in cases]
    for pid, c in zip(ids, cases):
      self._write_scan(os.path.join(cache_dir, f'{pid}.npz'), c.ct.hu, c.ct.spacing_mm)
    files.write_json(done, {'source': path, 'patients': ids,
                            'notes': {pid: c.ct.notes for pid, c in zip(ids, cases)}})
    return ids

  def _write_scan(self, path: str, hu: np.ndarray, spacing) -> None:
    cfg = self.builder_config
    geometry = geometry_lib.ConeBeamGeometry().with_detector(cfg.detector)
    angles = np.arange(cfg.num_views, dtype=np.float32) * (360.0 / cfg.num_views)
    s = drr.scan_volume(hu, spacing, geometry, angles,
                        bone_threshold_hu=cfg.bone_threshold_hu)
    files.write_npz(path, image=s.image, contour=s.contour, contour_bone=s.contour_bone,
                    angles_deg=s.angles_deg)

  # ---- splits -----------------------------------------------------------------------------

  def _cache_dir(self) -> str:
    """Finished patients' scans live here, so an interrupted build resumes where it was."""
    cfg = self.builder_config
    fields = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    key = hashlib.sha256(fields.encode()).hexdigest()[:10]
    path = os.path.join(os.fspath(self.data_dir_root), 'knee_drr_cache',
                        f'{cfg.name}-{self.version}-{key}')
    os.makedirs(path, exist_ok=True)
    return path

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    if cfg.split_by not in ('patient', 'image'):
      raise ValueError(f'knee_drr config {cfg.name}: split_by must be patient or image, '
                       f'got {cfg.split_by!r}')
    patients = self._patients(dl_manager)
    ids = sorted(patients)
    cache_dir = self._cache_dir()
    # Every scan is made once, in a fixed order, with progress, before any split is written.
    bar = progress.Progress(len(ids), f'knee_drr/{cfg.name}: scanning patients',
                            unit='patient', every=0.0)
    case_of = {}  # patient id -> the case (file) it comes from
    for cid in ids:
      for pid in self._scan(cid, patients[cid], cache_dir):
        if pid in case_of:
          raise ValueError(f'knee_drr config {cfg.name}: patient {pid} comes from both '
                           f'{patients[case_of[pid]]} and {patients[cid]}; rename one')
        case_of[pid] = cid
      bar.update()
    pids = sorted(case_of)
    if cfg.split_by == 'patient':
      # By case, not by leg: both legs of one person land in the same split.
      split = {k: [(p, v) for p in pids if case_of[p] in set(c_ids)
                   for v in range(cfg.num_views)]
               for k, c_ids in split_patients(ids, cfg.seed).items()}
    else:
      split = split_images(pids, cfg.num_views, cfg.seed)
    return {k: self._generate_examples(cache_dir, split[k]) for k in _SPLITS}

  def _generate_examples(self, cache_dir, pairs):
    pid_loaded, s = None, None
    for pid, v in pairs:  # sorted by patient: each patient's scan is read once
      if pid != pid_loaded:
        with np.load(os.path.join(cache_dir, f'{pid}.npz')) as z:
          s, pid_loaded = dict(z), pid
      yield f'{pid}_{v:03d}', {
          'image': s['image'][v][..., None],
          'contour': s['contour'][v][..., None],
          'contour_bone': s['contour_bone'][v][..., None],
          'patient_id': pid,
          'angle_deg': np.float32(s['angles_deg'][v]),
      }
