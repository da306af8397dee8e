"""Defaults shared by every method: the paper's setup (Mei et al.; score_sde's NCSN++).

    python main.py --mode=train --config=configs/ctm.py --workdir=runs/ctm

Method files (csm.py, ctm.py, unet.py) override only what differs. The config argument is
comma-separated words: a condition (contour | contour_bone) and a scale (paper | cpu |
test), e.g. `--config=configs/ctm.py:contour_bone,cpu`. No argument = paper, contour.
"""
import ml_collections

# The segmentations a model may follow (score_sde_knee/methods.py reads them from here).
CONDITIONS = ('contour', 'contour_bone')
SCALES = ('paper', 'cpu', 'test')


def get_config(arg: str | None = None, method: str = 'ctm') -> ml_collections.ConfigDict:
  condition, scale = parse_arg(arg)
  c = ml_collections.ConfigDict()
  c.method = method            # unet | csm | ctm: model, loss, sampler (methods.py).
  c.condition = condition      # contour | contour_bone: the segmentation the model follows.
  c.scale = scale              # paper | cpu | test: recorded for the logs and the report.
  c.seed = 42                  # Parameters, data order and the training RNG stream.

  c.data = d = ml_collections.ConfigDict()
  d.name = 'knee_drr'
  d.builder_config = 'phantom_256'  # knee_drr/<builder_config>
  d.version = '2.0.0'               # knee_drr version ('' = the newest the code builds).
  d.data_dir = ''                   # '' = TFDS default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  d.image_size = 256                # Images are resized (area) if the data set differs.
  d.prefetch = 4                    # batches read ahead by the Grain iterator (>= threads)
  d.read_threads = 4                # Grain threads reading and resizing examples

  c.model = m = ml_collections.ConfigDict()
  m.nf = 64                         # Base channel count.
  m.ch_mult = (1, 2, 2, 2, 2, 4)    # Six levels 256..8 (paper).
  m.num_res_blocks = 2              # Per level (score_sde's 256 px configs).
  m.attn_resolutions = (16,)
  m.dropout = 0.0
  m.fir_kernel = (1, 3, 3, 1)
  m.skip_rescale = True
  m.resblock_type = 'biggan'
  m.progressive = 'output_skip'
  m.progressive_input = 'input_skip'
  m.progressive_combine = 'sum'
  m.init_scale = 0.0
  m.fourier_scale = 16.0
  m.scale_by_sigma = True           # VE: output divided by sigma (off for the U-Net).
  m.ema_rate = 0.999               # With warm-up: min(rate, (1 + step) / (10 + step)).

  c.sde = s = ml_collections.ConfigDict()
  s.sigma_min = 0.01
  s.sigma_max = 128.0               # Paper (score_sde used 348 at 256 px).
  s.num_scales = 500                # N for the PC sampler.

  c.training = t = ml_collections.ConfigDict()
  t.batch_size = 16                 # Global, across all devices and hosts.
  t.num_train_steps = 1_300_000
  t.eps = 1e-5                      # t ~ U(eps, 1).
  t.compute_dtype = 'float32'       # or 'bfloat16': mixed precision, float32 parameters.
  t.steps_per_call = 1              # Updates per jitted call (lax.scan); divides all periods.
  t.log_every = 100
  t.eval_every = 5000               # Validation loss with EMA parameters.
  t.eval_batches = 8
  t.sample_every = 50000            # A small sample grid (0 = never).
  t.num_grid_samples = 4
  t.checkpoint_every = 50000        # Kept checkpoints.
  t.keep_checkpoints = 5
  t.preemption_every = 5000         # Overwritten frequently: a crash loses at most this.

  c.optim = o = ml_collections.ConfigDict()
  o.lr = 2e-4
  o.beta1 = 0.9
  o.beta2 = 0.999
  o.eps = 1e-8
  o.warmup = 5000
  o.grad_clip = 1.0

  c.sampling = p = ml_collections.ConfigDict()
  p.method = 'pc'                   # pc (predictor-corrector) | heun | dpm2 (PF-ODE, EDM).
  p.snr = 0.4                       # Langevin corrector signal-to-noise ratio (paper).
  p.n_steps_each = 1                # Corrector steps per predictor step.
  p.order = 'predictor_first'       # Paper; 'corrector_first' is score_sde's order.
  p.per_sample_step = False         # Corrector step size per sample instead of batch-wide.
  p.predictor = 'reverse_diffusion'  # Paper; 'ancestral' keeps coarse grids (N ~ 25) exact.
  p.t0 = 0.4                        # CSM (SDEdit) start time.
  p.t_jump = 1.0                    # pc: < 1 makes the first step jump to sigma(t_jump).
  p.precond = 0.0                   # pc: > 0 lengthens the corrector's low-frequency steps.
  p.precond_width = 4.0             # pc: the boost's Gaussian low-pass std, pixels.
  p.momentum = 0.0                  # pc: > 0 makes the corrector underdamped (velocity kept).
  p.known_air = False               # pc: hold the pixels outside the mask at air (0),
  p.air_margin = 0                  # all but those within this many pixels of the mask.
  p.eps = 1e-5                      # Last time of the grid.
  p.ode_steps = 18                  # heun / dpm2: N noise levels, NFE = 2N - 1 (EDM: 18).
  p.rho = 7.0                       # heun / dpm2: EDM schedule exponent.
  p.s_churn = 0.0                   # heun / dpm2: EDM stochasticity; 0 = deterministic ODE.
  p.s_tmin = 0.0                    # Churn only where s_tmin <= sigma <= s_tmax.
  p.s_tmax = float('inf')           # Below sigma_max keeps the score's t inside (0, 1].
  p.s_noise = 1.0                   # Churn noise scale (EDM: 1.003 on ImageNet).

  c.eval = e = ml_collections.ConfigDict()
  e.batch_size = 16
  e.split = 'test'
  e.num_images = 0                  # 0 = whole split.
  e.view_stride = 1                 # Every n-th view (by angle) of each patient.
  e.condition = ''                  # '' = config.condition; CSM: either (one model, both).

  _apply_scale(c, scale)
  return c


def parse_arg(arg: str | None) -> tuple[str, str]:
  condition, scale = 'contour', 'paper'
  for word in filter(None, (w.strip() for w in (arg or '').split(','))):
    if word in CONDITIONS:
      condition = word
    elif word in SCALES:
      scale = word
    else:
      raise ValueError(
          f'Unknown config option {word!r}: expected a condition {CONDITIONS} or a scale '
          f'{SCALES}, comma-separated, e.g. "configs/ctm.py:contour_bone,cpu".')
  return condition, scale


def _apply_scale(c: ml_collections.ConfigDict, scale: str) -> None:
  if scale == 'paper':
    return
  if scale == 'cpu':
    # 64 px on 2 CPU cores: 0.4-0.7 s per step at batch 16 on a fast host, 1.2-1.3 s on a
    # Xeon @ 2.00 GHz (benchmarks/RESULTS.md), so 2000 steps take 15-45 minutes per
    # Table I model. nf 32 costs ~2.7x more per step.
    c.data.builder_config = 'phantom_64'
    c.data.image_size = 64
    c.model.nf = 16
    c.model.ch_mult = (1, 2, 2, 2)          # 64, 32, 16, 8
    c.model.num_res_blocks = 1
    c.sde.sigma_max = 32.0                  # ~ largest distance between 64 px images.
    c.sde.num_scales = 500
    c.training.num_train_steps = 2000
    c.training.log_every = 50
    c.training.eval_every = 250
    c.training.eval_batches = 2
    c.training.sample_every = 0             # --mode=eval draws the figures.
    c.training.checkpoint_every = 500
    c.training.keep_checkpoints = 3
    c.training.preemption_every = 100
    c.optim.warmup = 100
    c.optim.lr = 2e-3
    c.eval.view_stride = 6                  # every 6th view of each test patient: 30 images.
  elif scale == 'test':
    # Tiny: keeps the test suite fast. Not meant to learn anything.
    c.data.builder_config = 'phantom_64'
    c.data.image_size = 16
    c.model.nf = 8
    c.model.ch_mult = (1, 2)                # 16, 8
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.sde.sigma_max = 8.0
    c.sde.num_scales = 4
    c.training.batch_size = 4
    c.training.num_train_steps = 4
    c.training.log_every = 1
    c.training.eval_every = 2
    c.training.eval_batches = 1
    c.training.sample_every = 0
    c.training.checkpoint_every = 2
    c.training.keep_checkpoints = 2
    c.training.preemption_every = 1
    c.optim.warmup = 2
    c.eval.batch_size = 4
    c.eval.num_images = 4
