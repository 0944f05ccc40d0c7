"""HyperConformer: multi-head HyperMixing Conformer ASR for SpeechBrain."""

from hyperconformer.audio import TranscriptionError, load_audio
from hyperconformer.checkpointing import AtomicCheckpointer
from hyperconformer.compat import convert_speechbrain_state_dict
from hyperconformer.encoder import (
    HyperConformerEncoder,
    HyperConformerLayer,
    LayerState,
)
from hyperconformer.endpoint import CausalSilence, Endpointer
from hyperconformer.features import CausalFbank, CausalNormalization
from hyperconformer.folder import ModelFolderError
from hyperconformer.frontend import ConvFrontEnd
from hyperconformer.inference import FileResult, Transcriber
from hyperconformer.joint_search import JointBeamSearcher
from hyperconformer.live import LiveTranscription, StreamEvent
from hyperconformer.longform import Word
from hyperconformer.mixing import HyperMixing, MixingState
from hyperconformer.model import HyperConformerASR
from hyperconformer.pauses import find_pauses, keep_out_of_pauses
from hyperconformer.positional import (
    SinusoidalPositions,
    chunk_positions,
    sinusoidal_encoding,
)
from hyperconformer.segmentation import decode_segments, pause_segments
from hyperconformer.streaming import EncoderStreamContext, StreamingEncoder

__all__ = [
    "AtomicCheckpointer",
    "CausalFbank",
    "CausalNormalization",
    "CausalSilence",
    "ConvFrontEnd",
    "EncoderStreamContext",
    "Endpointer",
    "HyperConformerASR",
    "HyperConformerEncoder",
    "HyperConformerLayer",
    "HyperMixing",
    "JointBeamSearcher",
    "LayerState",
    "LiveTranscription",
    "MixingState",
    "ModelFolderError",
    "SinusoidalPositions",
    "StreamEvent",
    "StreamingEncoder",
    "chunk_positions",
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
