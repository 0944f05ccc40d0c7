"""Decoding: the attention beam searcher and CTC greedy/prefix decoding.

A model folder's ``decoder`` is a joint attention/CTC beam searcher
(:class:`hyperconformer.JointBeamSearcher`, or SpeechBrain's
``S2STransformerBeamSearcher`` in older folders). :func:`build_searcher`
makes it a :class:`~hyperconformer.joint_search.JointBeamSearcher` with the
folder's or other settings (beam size, CTC weight, partial CTC scoring);
:func:`ctc_decode` (with :func:`ctc_greedy` or :func:`ctc_prefix_searcher`)
decodes with the CTC head alone.
"""

from __future__ import annotations

import torch
from speechbrain.decoders.seq2seq import S2STransformerBeamSearcher

from hyperconformer.joint_search import JointBeamSearcher
from hyperconformer.longform import Word, token_words

__all__ = [
    "best_path_tokens",
    "build_searcher",
    "ctc_decode",
    "ctc_greedy",
    "ctc_prefix_searcher",
]


def build_searcher(
    old,
    ctc_lin: torch.nn.Module,
    blank_index: int,
    beam_size: int | None,
    ctc_weight: float | None,
    partial_ctc: bool,
):
    """A model folder's beam searcher, or a copy with other settings.

    ``partial_ctc`` moves the CTC scorer from full scoring (every token,
    every step: O(frames x beams x vocabulary)) to partial scoring (the
    ``2 x beam`` best attention candidates of each step).

    Arguments
    ---------
    old : S2STransformerBeamSearcher
        The folder's ``decoder``.
    ctc_lin : torch.nn.Module
        The CTC output layer (for a CTC scorer the folder lacks).
    blank_index : int
        CTC blank.
    beam_size, ctc_weight : optional
        New settings; None keeps the folder's.
    partial_ctc : bool
        Score CTC on the best attention candidates only.

    Returns
    -------
    JointBeamSearcher
        The folder's searcher if it is one and nothing changes.

    Raises
    ------
    ValueError
        Settings asked of a searcher that is not an S2STransformerBeamSearcher.

    Example
    -------
    >>> build_searcher(None, None, 0, None, None, False) is None
    True
    """
    from speechbrain.decoders.scorer import CTCScorer, ScorerBuilder

    scorer = getattr(old, "scorer", None)
    full = dict(scorer.full_scorers) if scorer else {}
    partial = dict(scorer.partial_scorers) if scorer else {}
    wants_partial = partial_ctc and "ctc" in full
    unchanged = beam_size is None and ctc_weight is None and not wants_partial
    if unchanged and type(old) is not S2STransformerBeamSearcher:
        return old  # already fast, or not ours to change
    if not isinstance(old, S2STransformerBeamSearcher):
        raise ValueError(
            "decoder: only S2STransformerBeamSearcher folders take a beam size, "
            f"CTC weight or CTC scoring, this one has {type(old).__name__}"
        )
    weights = {k: scorer.weights[k] for k in (*full, *partial)} if scorer else {}
    if ctc_weight is not None:
        if ctc_weight > 0 and "ctc" not in full and "ctc" not in partial:
            full["ctc"] = CTCScorer(
                ctc_fc=ctc_lin, blank_index=blank_index, eos_index=old.eos_index
            )
        if ctc_weight == 0:
            # A zero-weight scorer would still cost its full price.
            full.pop("ctc", None)
            partial.pop("ctc", None)
            weights.pop("ctc", None)
        else:
            weights["ctc"] = ctc_weight
    if partial_ctc and "ctc" in full:
        partial["ctc"] = full.pop("ctc")
    if full or partial:
        scorer = ScorerBuilder(
            weights=weights,
            full_scorers=list(full.values()),
            partial_scorers=list(partial.values()),
            scorer_beam_scale=scorer.scorer_beam_scale if scorer else 2,
        )
    else:
        scorer = None
    return JointBeamSearcher.like(
        old,
        beam_size=beam_size if beam_size is not None else old.beam_size,
        scorer=scorer,
    )


def ctc_greedy(
    log_probs: torch.Tensor, lengths: list[int], blank_index: int = 0
) -> list[tuple[list[int], list[int]]]:
    """Best path CTC decoding.

    Arguments
    ---------
    log_probs : torch.Tensor
        (batch, frames, vocab) CTC log-probabilities.
    lengths : list of int
        Valid frames of each row.
    blank_index : int
        CTC blank.

    Returns
    -------
    list of (tokens, frames)
        Per row: the tokens, and the frame of each token's first spike.

    Example
    -------
    >>> lp = torch.log(torch.tensor([[[.1, .9], [.1, .9], [.9, .1], [.1, .9]]]))
    >>> ctc_greedy(lp, [4])
    [([1, 1], [0, 3])]
    """
    return [
        best_path_tokens(row[:length], blank_index)
        for row, length in zip(log_probs.argmax(dim=-1).cpu(), lengths, strict=True)
    ]


def best_path_tokens(
    best: torch.Tensor, blank_index: int = 0
) -> tuple[list[int], list[int]]:
    """A CTC best path, (frames,) ids of the best output per frame, as tokens
    (repeats merged, blanks removed) and each token's first frame.

    Example
    -------
    >>> best_path_tokens(torch.tensor([0, 3, 3, 0, 3, 5]))
    ([3, 3, 5], [1, 4, 5])
    """
    keep = best != blank_index
    keep[1:] &= best[1:] != best[:-1]
    frames = keep.nonzero().flatten().tolist()
    return best[frames].tolist(), frames


def ctc_prefix_searcher(
    tokenizer, ctc_lin: torch.nn.Module, blank_index: int, beam_size: int
):
    """SpeechBrain's ``CTCPrefixBeamSearcher`` for a SentencePiece vocabulary.

    Special tokens (and outputs beyond the tokenizer's vocabulary) print as
    ''.

    Example
    -------
    >>> searcher = ctc_prefix_searcher(sp, asr.ctc_lin, 0, 10)  # doctest: +SKIP
    """
    from speechbrain.decoders.ctc import CTCPrefixBeamSearcher

    n_out = ctc_lin.w.out_features if hasattr(ctc_lin, "w") else None
    size = max(tokenizer.vocab_size(), n_out or 0)
    vocab = []
    for i in range(size):
        special = (
            i >= tokenizer.vocab_size()
            or tokenizer.is_control(i)
            or tokenizer.is_unknown(i)
        )
        vocab.append("" if special else tokenizer.id_to_piece(i))
    return CTCPrefixBeamSearcher(
        blank_index=blank_index, vocab_list=vocab, beam_size=beam_size
    )


def ctc_decode(
    log_probs: torch.Tensor,
    wav_lens: torch.Tensor,
    lengths: list[int],
    tokenizer,
    frame_seconds: float,
    blank_index: int = 0,
    prefix_searcher=None,
) -> list[tuple[str, list[Word]]]:
    """CTC-only decoding of a batch into text and timed words.

    Arguments
    ---------
    log_probs : torch.Tensor
        (batch, frames, vocab) CTC log-probabilities.
    wav_lens : torch.Tensor
        (batch,) relative lengths (what the prefix searcher takes).
    lengths : list of int
        Valid frames of each row (what greedy decoding takes).
    tokenizer : sentencepiece.SentencePieceProcessor
        Turns tokens into words.
    frame_seconds : float
        Seconds per frame, to time the words.
    blank_index : int
        CTC blank.
    prefix_searcher : optional
        From :func:`ctc_prefix_searcher`: prefix beam search instead of
        greedy best path.

    Returns
    -------
    list of (text, words)
        Per row; words timed in seconds from the row's start (greedy: from
        each token's first spike).

    Example
    -------
    >>> ctc_decode(lp, torch.ones(1), [50], sp, 0.04)  # doctest: +SKIP
    [('HELLO', [Word(text='HELLO', start=0.2, end=0.28)])]
    """
    if prefix_searcher is not None:
        out = []
        for beam in prefix_searcher(log_probs.cpu(), wav_lens.cpu()):
            best = beam[0]
            words = [
                Word(text, a * frame_seconds, b * frame_seconds)
                for text, (a, b) in best.text_frames or []
            ]
            out.append((" ".join(best.text.split()), words))
        return out
    return [
        (
            tokenizer.decode_ids(tokens),
            token_words(tokenizer, tokens, [(f, f + 1) for f in frames], frame_seconds),
        )
        for tokens, frames in ctc_greedy(log_probs, lengths, blank_index)
    ]
