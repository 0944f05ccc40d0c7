"""Streaming: the chunked encoder, causal features, and audio streamed chunk
by chunk giving one chunked pass's encoder outputs with a constant state."""

from pathlib import Path

import pytest
import torch
from speechbrain.lobes.features import Fbank
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

from hyperconformer import (
    CausalFbank,
    CausalNormalization,
    ConvFrontEnd,
    HyperConformerASR,
    StreamingEncoder,
)
from hyperconformer.audio import load_audio
from hyperconformer.convolution import ConvolutionModule

SIZES = dict(
    input_size=20 * 8,
    tgt_vocab=30,
    d_model=32,
    nhead=4,
    num_encoder_layers=2,
    num_decoder_layers=1,
    d_ffn=64,
    mixing_summary="mean",
    mixing_summary_frames=20,
)


def model_and_frontend(seed: int = 0) -> tuple[HyperConformerASR, ConvFrontEnd]:
    torch.manual_seed(seed)
    frontend = ConvFrontEnd(
        (None, None, 80),
        num_blocks=2,
        num_layers_per_block=1,
        out_channels=(16, 8),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        residuals=(False, False),
    ).eval()
    return HyperConformerASR(**SIZES).eval(), frontend


def corpus_audio(tiny_corpus, count: int) -> list[torch.Tensor]:
    files = sorted((Path(tiny_corpus) / "LibriSpeech" / "test-clean").rglob("*.flac"))
    return [load_audio(f) for f in files[:count]]


def global_normalization(
    feats: torch.Tensor, causal: bool = False
) -> InputNormalization:
    norm = CausalNormalization() if causal else InputNormalization(norm_type="global")
    norm(feats, torch.ones(feats.size(0)))  # statistics from this audio
    return norm.eval()


def test_chunked_convolution_looks_back_not_past_its_chunk():
    torch.manual_seed(0)
    conv = ConvolutionModule(8, kernel_size=7).eval()
    x = torch.randn(1, 30, 8)
    assert torch.allclose(conv(x, chunk_size=30), conv(x), atol=1e-6)
    changed = x.clone()
    changed[:, 18] += 1.0  # frame 18, in chunk 10..19; the kernel reaches 3
    diff = (conv(x, chunk_size=10) - conv(changed, chunk_size=10)).abs().amax(-1)[0]
    assert diff[:15].max() == 0  # out of reach, or before it
    assert diff[15:22].min() > 0  # its chunk, and the next one's left context
    assert diff[22:].max() == 0


def test_one_chunk_is_offline_and_chunked_encoding_is_padding_exact():
    model, _ = model_and_frontend()
    src = torch.randn(3, 50, SIZES["input_size"])
    lens = torch.tensor([1.0, 0.6, 0.3])
    with torch.no_grad():
        offline = model.encode(src, lens)
        whole = model.encode(src, lens, dynchunktrain_config=DynChunkTrainConfig(64))
        chunked = model.encode(src, lens, dynchunktrain_config=DynChunkTrainConfig(8))
        for i, length in enumerate((50, 30, 15)):
            alone = model.encode(
                src[i : i + 1, :length], None, 0, DynChunkTrainConfig(8)
            )
            assert (chunked[i, :length] - alone[0]).abs().max() <= 1e-5
    assert (whole - offline).abs().max() <= 1e-5
    assert (chunked - offline).abs().max() > 1e-2


def test_streaming_config_errors():
    model, _ = model_and_frontend()
    with pytest.raises(ValueError, match="left_context_size must be None"):
        model.encode(torch.randn(1, 20, 160), None, 0, DynChunkTrainConfig(8, 4))
    with pytest.raises(ValueError, match="needs a DynChunkTrainConfig"):
        model.make_streaming_context(None)
    context = model.make_streaming_context(DynChunkTrainConfig(8))
    with pytest.raises(ValueError, match="chunks of 1 to 8 frames, got 9"):
        model.encode_streaming(torch.randn(1, 9, 160), context)
    model.encode_streaming(torch.randn(1, 5, 160), context)
    with pytest.raises(ValueError, match="this stream has ended"):
        model.encode_streaming(torch.randn(1, 8, 160), context)
    norm = InputNormalization(norm_type="sentence")
    with pytest.raises(ValueError, match="norm_type='global'"):
        StreamingEncoder(
            CausalFbank(n_mels=80), norm, model_and_frontend()[1], model, 8
        )
    training = InputNormalization(norm_type="global")
    with pytest.raises(ValueError, match="normalizer is in training mode"):
        StreamingEncoder(
            CausalFbank(n_mels=80), training, model_and_frontend()[1], model, 8
        )
    with pytest.raises(ValueError, match="needs CausalFbank"):
        StreamingEncoder(Fbank(n_mels=80), norm, model_and_frontend()[1], model, 8)


def test_causal_fbank_is_fbank_above_the_floor_and_padding_exact(tiny_corpus):
    wav = corpus_audio(tiny_corpus, 1)[0][None]
    causal, ours = Fbank(n_mels=80)(wav), CausalFbank(n_mels=80)(wav)
    floor = causal.amax() - 80.0
    above = causal > floor + 1e-3
    assert (~above).float().mean() > 0.001  # the corpus's silences are floored
    assert torch.allclose(ours[above], causal[above], atol=1e-4)
    padded = CausalFbank(n_mels=80)(torch.cat((wav, torch.zeros(1, 8000)), 1))
    assert torch.equal(padded[:, : ours.size(1) - 2], ours[:, :-2])


def test_causal_normalization_is_padding_exact_and_checkpointed(tiny_corpus, tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    fbank = CausalFbank(n_mels=80)
    short, long = corpus_audio(tiny_corpus, 2)
    batch = torch.zeros(2, max(len(short), len(long)))
    batch[0, : len(short)], batch[1, : len(long)] = short, long
    norm = CausalNormalization(prior_frames=50)
    feats = norm(fbank(batch), torch.tensor([len(short), len(long)]) / batch.size(1))
    assert norm.count > 0  # training mode: the global statistics were updated
    norm.eval()
    alone = norm(fbank(short[None]), torch.ones(1))
    frames = alone.size(1)
    assert (feats[0, :frames] - alone[0]).abs().max() < 1e-4
    # Adapted to the utterance: each mel's mean over its second half is near 0.
    assert alone[0, frames // 2 :].mean(0).abs().max() < 0.5
    Checkpointer(tmp_path, {"norm": norm}).save_checkpoint()
    loaded = CausalNormalization(prior_frames=50).eval()
    Checkpointer(tmp_path, {"norm": loaded}).recover_if_possible()
    assert torch.equal(loaded.glob_mean, norm.glob_mean)
    assert torch.equal(loaded(fbank(short[None])), alone)


@pytest.mark.parametrize("chunk_size, causal", [(8, False), (16, True)])
def test_audio_streamed_in_pieces_equals_one_chunked_pass(
    tiny_corpus, chunk_size, causal
):
    model, frontend = model_and_frontend(seed=chunk_size)
    fbank = CausalFbank(n_mels=80)
    wav = torch.cat(corpus_audio(tiny_corpus, 2))[None]  # about 10 s
    with torch.no_grad():
        norm = global_normalization(fbank(wav), causal)
        config = DynChunkTrainConfig(chunk_size)
        whole = model.encode(frontend(norm(fbank(wav))), None, 0, config)
        stream = StreamingEncoder(fbank, norm, frontend, model, chunk_size)
        piece = 2731  # 171 ms, not aligned with frames or chunks
        pieces = [
            stream.push(wav[:, i : i + piece]) for i in range(0, wav.size(1), piece)
        ]
        streamed = torch.cat(pieces + [stream.finish()], 1)
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().max() <= 1e-4
    # Frames come out as soon as their chunk is complete, not at the end.
    assert sum(p.size(1) for p in pieces) >= whole.size(1) - chunk_size


def test_stream_state_does_not_grow(tiny_corpus):
    model, frontend = model_and_frontend()
    fbank = CausalFbank(n_mels=80)
    wav = torch.cat(corpus_audio(tiny_corpus, 8))[None]  # about a minute
    piece = 8000
    with torch.no_grad():
        norm = global_normalization(fbank(wav))
        stream = StreamingEncoder(fbank, norm, frontend, model, chunk_size=16)
        sizes = []
        for i in range(0, wav.size(1), piece):
            stream.push(wav[:, i : i + piece])
            sizes.append(stream.state_bytes())
    # Buffers cycle with how pieces fall on frames and chunks (a period of
    # 32 pieces here); no more held after 24 s than at 4-24 s.
    assert len(sizes) > 80
    assert max(sizes[48:]) <= max(sizes[8:48])
    assert stream.context.layers[0].mixing.count.item() == stream.context.frames


def test_a_chunk_comes_out_once_its_audio_has_arrived():
    model, frontend = model_and_frontend()
    norm = InputNormalization(norm_type="global").eval()
    norm.glob_mean, norm.glob_std = torch.zeros(80), torch.ones(80)
    wav = torch.randn(2, 12000)
    chunk_samples = 16 * 640  # 16 frames of 40 ms
    with torch.no_grad():
        for extra, frames in ((0, 0), (40, 0), (41, 16)):
            stream = StreamingEncoder(CausalFbank(n_mels=80), norm, frontend, model, 16)
            out = stream.push(wav[:, : chunk_samples + extra])
            assert out.shape == (2, frames, SIZES["d_model"])
