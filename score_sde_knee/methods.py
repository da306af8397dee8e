"""The paper's three methods, one record each: what the network sees, its loss, how it samples.

  unet: a U-Net without noise input, segmentation in, radiograph out; L1 loss; one forward
        pass (the paper's baseline).
  csm:  an unconditional score s(x_t, sigma) trained by denoising score matching; the
        segmentation enters only at sampling, as SDEdit's start perturbed to t0 (paper
        Alg. 1), so one model serves every condition.
  ctm:  a conditional score s(x_t, y, sigma), the segmentation y concatenated to x_t as an
        input channel; denoising score matching; sampled from pure noise (paper Alg. 2).

Code that depends on the method reads these fields (`get(config.method)`) rather than
comparing names, so a method's behaviour is written here once.
"""
import dataclasses

from configs import default

IMAGE_CHANNELS = 1  # grey-level radiographs; the segmentation has as many channels.
# The segmentations a model may follow. The config argument's parser needs them below the
# model code, so they are defined with it.
CONDITIONS = default.CONDITIONS
LOSSES = ('dsm', 'l1')
SAMPLINGS = ('forward', 'sdedit', 'conditional')


@dataclasses.dataclass(frozen=True)
class Method:
  """One method.

  Attributes:
    name: its config.method value.
    label: its name in Table I and the figures.
    noise_conditioned: the network sees the noisy image x_t and its sigma (a score model);
      False: it sees no noise at all (the U-Net, which maps the segmentation to an image).
    cond_input: the segmentation is an input channel of the network, so a model follows the
      one condition it was trained on.
    loss: 'dsm' (denoising score matching) or 'l1' (against the true image).
    sampling: 'forward' (one pass of the network), 'sdedit' (reverse SDE from the
      segmentation perturbed to t0) or 'conditional' (reverse SDE of the conditional score
      from N(0, sigma_max^2 I)).
  """
  name: str
  label: str
  noise_conditioned: bool
  cond_input: bool
  loss: str
  sampling: str

  def __post_init__(self):
    if self.loss not in LOSSES or self.sampling not in SAMPLINGS:
      raise ValueError(f'Method {self.name}: loss must be one of {LOSSES} and sampling one '
                       f'of {SAMPLINGS}, got {self.loss!r} and {self.sampling!r}')
    if not (self.noise_conditioned or self.cond_input):
      raise ValueError(f'Method {self.name}: the network would see no input')

  @property
  def input_channels(self) -> int:
    """Channels the network's input has: x_t if noise-conditioned, then the segmentation."""
    return IMAGE_CHANNELS * (int(self.noise_conditioned) + int(self.cond_input))

  def conditions(self, trained_on: str) -> tuple[str, ...]:
    """The conditions a model trained on `trained_on` can sample from."""
    return (trained_on,) if self.cond_input else CONDITIONS


UNET = Method('unet', 'U-Net', noise_conditioned=False, cond_input=True, loss='l1',
              sampling='forward')
CSM = Method('csm', 'CSM', noise_conditioned=True, cond_input=False, loss='dsm',
             sampling='sdedit')
CTM = Method('ctm', 'CTM', noise_conditioned=True, cond_input=True, loss='dsm',
             sampling='conditional')
ALL = (UNET, CSM, CTM)  # in the paper's Table I order
NAMES = tuple(m.name for m in ALL)


def get(name: str) -> Method:
  """The record of config.method `name`.

  Raises:
    ValueError: an unknown name, with the allowed ones.
  """
  for method in ALL:
    if method.name == name:
      return method
  raise ValueError(f'config.method={name!r}: expected one of {NAMES}.')
