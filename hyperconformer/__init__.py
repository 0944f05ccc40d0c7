"""HyperConformer: multi-head HyperMixing Conformer ASR for SpeechBrain."""

from hyperconformer.audio import TranscriptionError, load_audio
from hyperconformer.checkpointing import AtomicCheckpointer
from hyperconformer.compat import convert_speechbrain_state_dict
from hyperconformer.encoder import HyperConformerEncoder, HyperConformerLayer
from hyperconformer.folder import ModelFolderError
from hyperconformer.frontend import ConvFrontEnd
from hyperconformer.inference import FileResult, Transcriber
from hyperconformer.joint_search import JointBeamSearcher
from hyperconformer.longform import Word
from hyperconformer.mixing import HyperMixing
from hyperconformer.model import HyperConformerASR
from hyperconformer.pauses import find_pauses, keep_out_of_pauses
from hyperconformer.positional import SinusoidalPositions, sinusoidal_encoding
from hyperconformer.segmentation import decode_segments, pause_segments

__all__ = [
    "AtomicCheckpointer",
    "ConvFrontEnd",
    "HyperConformerASR",
    "HyperConformerEncoder",
    "HyperConformerLayer",
    "HyperMixing",
    "JointBeamSearcher",
    "ModelFolderError",
    "SinusoidalPositions",
    "convert_speechbrain_state_dict",
    "decode_segments",
    "find_pauses",
    "keep_out_of_pauses",
    "pause_segments",
    "sinusoidal_encoding",
    "FileResult",
    "Transcriber",
    "Word",
    "TranscriptionError",
    "load_audio",
]
