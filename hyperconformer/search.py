"""Decoding: the attention beam searcher and CTC greedy/prefix decoding.

A model folder's ``decoder`` is SpeechBrain's ``S2STransformerBeamSearcher``
(joint attention/CTC beam search). :func:`build_searcher` rebuilds it with
other settings (beam size, CTC weight, partial CTC scoring) as the faster
:class:`LastStepTransformerBeamSearcher`; :func:`ctc_greedy` and
:func:`ctc_prefix_searcher` decode with the CTC head alone.
"""

from __future__ import annotations

import torch
from speechbrain.decoders.seq2seq import S2STransformerBeamSearcher

__all__ = [
    "LastStepTransformerBeamSearcher",
    "build_searcher",
    "ctc_greedy",
    "ctc_prefix_searcher",
]


class LastStepTransformerBeamSearcher(S2STransformerBeamSearcher):
    """``S2STransformerBeamSearcher`` that projects only the newest step.

    SpeechBrain's searcher applies the output layer to every decoded position
    at every step and keeps the last; with 5000 tokens that is about half of
    a step's work once hypotheses reach a hundred tokens (a 30 s window).
    Same arguments, same search.
    """

    def forward_step(self, inp_tokens, memory, enc_states, enc_lens):
        """One step: (batch x beam,) tokens -> (batch x beam, vocab) log-probs."""
        if memory is None:
            memory = torch.empty(inp_tokens.size(0), 0, device=inp_tokens.device)
        memory = torch.cat([memory, inp_tokens.unsqueeze(1)], dim=-1)
        pred, attn = self.model.decode(memory, enc_states, enc_lens)
        log_probs = self.softmax(self.fc(pred[:, -1]) / self.temperature)
        return log_probs, memory, attn


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
    The folder's searcher if nothing changes, else a
    :class:`LastStepTransformerBeamSearcher`.

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
    if beam_size is None and ctc_weight is None and not wants_partial:
        return old
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
    return LastStepTransformerBeamSearcher(
        modules=[old.model, old.fc],
        temperature=old.temperature,
        bos_index=old.bos_index,
        eos_index=old.eos_index,
        min_decode_ratio=old.min_decode_ratio,
        max_decode_ratio=old.max_decode_ratio,
        beam_size=beam_size if beam_size is not None else old.beam_size,
        scorer=scorer,
        using_eos_threshold=old.using_eos_threshold,
        eos_threshold=old.eos_threshold,
        length_normalization=old.length_normalization,
        using_max_attn_shift=old.using_max_attn_shift,
        max_attn_shift=old.max_attn_shift,
        minus_inf=old.minus_inf,
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
    out = []
    for row, length in zip(log_probs.argmax(dim=-1).cpu(), lengths, strict=True):
        row = row[:length]
        keep = row != blank_index
        keep[1:] &= row[1:] != row[:-1]
        frames = keep.nonzero().flatten().tolist()
        out.append((row[frames].tolist(), frames))
    return out


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
