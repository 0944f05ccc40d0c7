"""CTC prefix scores for joint CTC/attention beam search, scored on demand.

The prefix score of a hypothesis ``h = g + c`` (Watanabe et al. 2017,
Algorithm 2, as in SpeechBrain's ``CTCPrefixScore``) is, with ``phi_t`` the
probability that frames ``0..t`` collapse to exactly ``g`` (``r^b_t(g)``
alone when ``c`` repeats the last token of ``g``, else
``r^n_t(g) + r^b_t(g)``)::

    psi(h) = sum_{t >= start} phi_{t-1} * p_t(c)

a dot product over time: scoring a few (hypothesis, token) pairs costs
``frames`` each, with no recursion. Only the tokens a beam search keeps need
the forward variables ``r^n_t(h)``, ``r^b_t(h)`` of the next step; their
recursions are first-order linear, ``r^n_t = p_t(c) (r^n_{t-1} + phi_{t-1})``
and ``r^b_t = p_t(blank) (r^b_{t-1} + r^n_{t-1})``, so both are a cumulative
sum and a ``logcumsumexp`` over time: with ``D_t = sum_{u<=t} log p_u(c)``,
``log r^n_t = D_t + logcumsumexp_s(log phi_{s-1} - D_{s-1})``. No loop over
frames runs in Python. These run in float64: ``D_t`` reaches 1e4-1e5 over a
30 s window, where float32 would keep only three decimals.

Like SpeechBrain, the score of ``c = eos`` is the probability of ``g``
complete at the last frame, blank is never a hypothesis token, impossible
values are ``-1e20`` and frames before ``start = max(1, len(g))`` are skipped.
A prefix score never grows along a hypothesis (``psi(g + c) <= psi(g)``),
which lets the searcher skip tokens whose score cannot reach the beam.
"""

from __future__ import annotations

import torch

__all__ = ["MINUS_INF", "CTCPrefixScorer"]

MINUS_INF = -1e20  # SpeechBrain's "impossible"


class CTCPrefixScorer:
    """Batched CTC prefix scores of ``utterances x beam`` hypotheses.

    Arguments
    ---------
    log_probs : torch.Tensor
        (utterances, time, vocab) CTC log-probabilities.
    lengths : torch.Tensor
        (utterances,) valid frames.
    blank_index, eos_index : int
        Blank and end-of-sentence tokens.
    beam : int
        Hypotheses per utterance; rows of utterance ``i`` are
        ``i * beam ... i * beam + beam - 1``.

    Example
    -------
    >>> lp = torch.randn(2, 30, 6).log_softmax(-1)
    >>> ctc = CTCPrefixScorer(lp, torch.tensor([30, 20]), 0, 2, beam=3)
    >>> last = torch.ones(6, dtype=torch.long)  # BOS
    >>> ctc.score(torch.tensor([0, 3]), torch.tensor([4, 5]), last).shape
    torch.Size([2])
    """

    def __init__(
        self,
        log_probs: torch.Tensor,
        lengths: torch.Tensor,
        blank_index: int,
        eos_index: int,
        beam: int,
    ) -> None:
        batch, time, _ = log_probs.shape
        self.blank, self.eos, self.beam, self.time = blank_index, eos_index, beam, time
        # (utterances, vocab, time): one token's frames are contiguous.
        self.x = log_probs.detach().float().transpose(1, 2).contiguous()
        self.lengths = lengths.to(log_probs.device).long()
        self.valid = (
            torch.arange(time, device=log_probs.device)[None] < (self.lengths[:, None])
        )  # (utterances, time)
        blank = self.x[:, blank_index].double()
        self.blank_lp = blank.masked_fill(~self.valid, 0.0)
        # Padding frames: no token can be emitted there.
        self.x.masked_fill_(~self.valid[:, None], MINUS_INF)
        # Before any token: g is empty, only blanks so far.
        rows = batch * beam
        self.r_b = torch.cumsum(self.blank_lp, 1).repeat_interleave(beam, 0)
        self.r_n = torch.full_like(self.r_b, MINUS_INF)
        self.psi_prev = torch.zeros(rows, dtype=torch.float64, device=log_probs.device)
        self.prefix_length = 0
        self._refresh()

    def _refresh(self) -> None:
        self.phi = torch.logaddexp(self.r_n, self.r_b)  # (rows, time)
        # Scoring sums phi_{t-1} p_t(c) in float32, as SpeechBrain does: the
        # terms that decide a score are those near its maximum.
        self.phi32 = self.phi.float()
        self.r_b32 = self.r_b.float()

    @property
    def start(self) -> int:
        return max(1, self.prefix_length)

    def _utt(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.div(rows, self.beam, rounding_mode="floor")

    def _phi(self, rows, tokens, last):
        repeat = (tokens == last[rows])[:, None]
        return torch.where(repeat, self.r_b[rows], self.phi[rows])

    def score(
        self, rows: torch.Tensor, tokens: torch.Tensor, last: torch.Tensor
    ) -> torch.Tensor:
        """Prefix scores ``log psi`` of (hypothesis row, token) pairs.

        Arguments
        ---------
        rows, tokens : torch.Tensor
            (pairs,) hypothesis rows and candidate tokens (not eos/blank).
        last : torch.Tensor
            (rows,) last token of each hypothesis.

        Returns
        -------
        torch.Tensor
            (pairs,) float64.
        """
        start, time = self.start, self.time
        utt = self._utt(rows)
        phi = self.phi32[rows, start - 1 : time - 1]
        repeat = tokens == last[rows]
        if repeat.any():
            phi[repeat] = self.r_b32[rows[repeat], start - 1 : time - 1]
        x = self.x[utt, tokens]  # (pairs, time), padding frames at MINUS_INF
        terms = phi + x[:, start:]
        if self.prefix_length == 0:  # frame 0 after the empty prefix
            terms = torch.cat((terms, x[:, :1]), dim=1)
        if not terms.size(1):
            return torch.full_like(x[:, 0], MINUS_INF).double()
        return torch.logsumexp(terms, dim=1).double()

    def score_all(self, utterances: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Prefix scores of every token for every hypothesis of ``utterances``.

        A matrix product over time in probability space (each hypothesis's
        ``phi`` scaled by its maximum), in float32: terms more than ~87 nats
        below that maximum underflow, which only touches scores far too low
        to matter. Eos and blank entries are left to the caller.

        Returns
        -------
        torch.Tensor
            (utterances, beam, vocab) float64.
        """
        start, time, beam = self.start, self.time, self.beam
        rows = (
            utterances[:, None] * beam + torch.arange(beam, device=last.device)
        ).flatten()
        phi = self.phi[rows, start - 1 : time - 1]  # (rows, frames)
        valid = self.valid[utterances, start:].repeat_interleave(beam, 0)
        phi = phi.masked_fill(~valid, MINUS_INF)
        top = phi.max(dim=1, keepdim=True).values
        weights = torch.exp(phi - top).float().view(len(utterances), beam, -1)
        if not hasattr(self, "probs"):
            self.probs = torch.exp(self.x)  # (utterances, vocab, time)
        probs = self.probs[utterances, :, start:]
        psi = torch.log(torch.bmm(weights, probs.transpose(1, 2)).double())
        psi = psi + top.view(len(utterances), beam, 1)
        if self.prefix_length == 0:  # frame 0 starts the first token
            psi = torch.logaddexp(psi, self.x[utterances, None, :, 0].double())
        psi = psi.nan_to_num(neginf=MINUS_INF).clamp(min=MINUS_INF)
        # A token repeating the hypothesis's last one needs a blank first.
        repeat = last[rows]
        exact = self.score(rows, repeat, last).view(len(utterances), beam)
        psi.view(-1, psi.size(-1))[torch.arange(len(rows)), repeat] = exact.flatten()
        return psi

    def upper_bounds(self) -> torch.Tensor:
        """(rows, vocab) float64 upper bounds of ``psi(g + c) - psi(g)``.

        ``psi(g + c) = sum_t phi_{t-1} p_t(c) <= (sum_t phi_{t-1}) max_t p_t(c)``
        over the frames still to come, and never above ``psi(g)``: tokens the
        CTC head gives no chance in the rest of the utterance get a low bound.
        """
        start, time = self.start, self.time
        if not hasattr(self, "future_max"):
            # max over frames >= t of each token's log-probability
            flipped = torch.flip(
                self.x.masked_fill(~self.valid[:, None], MINUS_INF), [2]
            )
            self.future_max = torch.flip(torch.cummax(flipped, dim=2).values, [2])
        first = 0 if self.prefix_length == 0 else start
        peak = self.future_max[
            :, :, min(first, time - 1)
        ].double()  # (utterances, vocab)
        phi = self.phi[:, start - 1 : time - 1].masked_fill(
            ~self.valid[:, start:].repeat_interleave(self.beam, 0), MINUS_INF
        )
        if self.prefix_length == 0:  # the empty prefix at frame -1
            phi = torch.cat((phi, torch.zeros_like(phi[:, :1])), dim=1)
        mass = torch.logsumexp(phi, dim=1)  # (rows,)
        bound = (
            mass[:, None]
            + peak.repeat_interleave(self.beam, 0)
            - self.psi_prev[:, None]
        )
        return bound.clamp(max=0.0)

    def eos_scores(self) -> torch.Tensor:
        """(rows,) ``log psi`` of ending each hypothesis now."""
        last_frame = (self.lengths - 1).repeat_interleave(self.beam)
        return self.phi.gather(1, last_frame[:, None]).squeeze(1)

    def advance(
        self, rows: torch.Tensor, tokens: torch.Tensor, psi: torch.Tensor, last
    ) -> None:
        """Hypothesis ``i`` becomes ``rows[i]`` extended by ``tokens[i]``.

        ``psi``: (rows,) their prefix scores; ``last``: (rows,) last tokens
        before this step.
        """
        start, time = self.start, self.time
        utt = self._utt(rows)
        phi = self._phi(rows, tokens, last)
        valid = self.valid[utt, start:]
        logp = self.x[utt, tokens].double().clamp(min=MINUS_INF)
        init = (
            logp[:, :1]
            if self.prefix_length == 0
            else torch.full_like(logp[:, :1], MINUS_INF)
        )
        # Frames start-1 .. time-1; cumulative log p from frame `start`.
        logp_c = logp[:, start:].masked_fill(~valid, 0.0)
        zero = torch.zeros_like(init)
        d = torch.cat((zero, torch.cumsum(logp_c, 1)), dim=1)
        a = torch.cat((init, phi[:, start - 1 : time - 1] - d[:, :-1]), dim=1)
        r_n = d + torch.logcumsumexp(a, 1)
        e = torch.cat((zero, torch.cumsum(self.blank_lp[utt, start:], 1)), dim=1)
        a = torch.cat((torch.full_like(init, MINUS_INF), r_n[:, :-1] - e[:, :-1]), 1)
        r_b = e + torch.logcumsumexp(a, 1)
        self.r_n = torch.full_like(self.r_n[rows], MINUS_INF)
        self.r_b = self.r_n.clone()
        self.r_n[:, start - 1 :] = r_n
        self.r_b[:, start - 1 :] = r_b
        invalid = ~self.valid[utt]
        self.r_n.masked_fill_(invalid, MINUS_INF)
        self.r_b.masked_fill_(invalid, MINUS_INF)
        self.psi_prev = psi
        self.prefix_length += 1
        self._refresh()

    def select_utterances(self, utterances: torch.Tensor, rows: torch.Tensor) -> None:
        """Keep only ``utterances`` (and their hypothesis ``rows``)."""
        self.x = self.x.index_select(0, utterances)
        self.lengths = self.lengths.index_select(0, utterances)
        self.valid = self.valid.index_select(0, utterances)
        self.blank_lp = self.blank_lp.index_select(0, utterances)
        self.r_n = self.r_n.index_select(0, rows)
        self.r_b = self.r_b.index_select(0, rows)
        self.psi_prev = self.psi_prev.index_select(0, rows)
        for name in ("probs", "future_max"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).index_select(0, utterances))
        self._refresh()
