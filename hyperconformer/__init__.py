"""HyperConformer: multi-head HyperMixing Conformer ASR for SpeechBrain."""

from hyperconformer.compat import convert_speechbrain_state_dict
from hyperconformer.encoder import HyperConformerEncoder, HyperConformerLayer
from hyperconformer.mixing import HyperMixing
from hyperconformer.model import HyperConformerASR
from hyperconformer.positional import SinusoidalPositions, sinusoidal_encoding

__all__ = [
    "HyperConformerASR",
    "HyperConformerEncoder",
    "HyperConformerLayer",
    "HyperMixing",
    "SinusoidalPositions",
    "convert_speechbrain_state_dict",
    "sinusoidal_encoding",
]
