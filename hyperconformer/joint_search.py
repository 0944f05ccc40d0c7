"""Joint CTC/attention beam search: SpeechBrain's search, an order of magnitude
cheaper.

:class:`JointBeamSearcher` takes the arguments of SpeechBrain's
``S2STransformerBeamSearcher`` (and loads from the same yaml) and keeps its
search: the same scores in the same order (attention log-probs times
``1 - ctc_weight``, end-of-sentence rules, blank blocked, full scorers in
their order, length normalisation, ``topk`` over ``beam x vocabulary`` per
utterance, hypotheses finished at eos kept until the beam is full). What
changes is how the scores are obtained:

- the decoder and a fused Transformer LM run one position per step with
  key/value caches (:mod:`hyperconformer.incremental`);
- full CTC scoring (every token, every step) is computed only where it can
  change the result. CTC prefix scores never increase along a hypothesis
  (``delta <= 0``), so every candidate's joint score is at most its score
  without the CTC term; a tighter bound comes from the largest probability
  the CTC head still gives each token in the frames to come
  (:meth:`~hyperconformer.ctc_prefix.CTCPrefixScorer.upper_bounds`). The
  CTC term is computed exactly for the ``8 x beam`` best candidates by the
  bound; if the next bound is below the ``beam``-th exact score, no other
  candidate can enter the beam. Else (at 4% of the steps of the demo model's
  test utterances, at every step with random weights) the utterance's whole
  vocabulary is scored, as one matrix product over time. End of sentence
  and blank are always scored exactly;
- partial CTC scoring (SpeechBrain's ``partial_scorers``) scores the same
  ``scorer_beam_scale x beam`` candidates per hypothesis as SpeechBrain;
- utterances whose beam is complete leave the batch, so a batch of files or
  long-form windows runs each only as long as it needs.

Hypotheses equal SpeechBrain's up to float rounding (near-ties can break the
other way). Settings it cannot reproduce exactly (attention-shift limits,
coverage/n-gram/RNN LM scorers, CTC windows, CTC weight 1) fall back to
SpeechBrain's own search.
"""

from __future__ import annotations

import torch
from speechbrain.decoders.seq2seq import S2STransformerBeamSearcher
from speechbrain.utils.data_utils import undo_padding

from hyperconformer.ctc_prefix import MINUS_INF, CTCPrefixScorer
from hyperconformer.incremental import IncrementalDecoder, IncrementalLM

__all__ = ["JointBeamSearcher"]

# A candidate outside the exactly scored set may only be skipped if its
# bound is this far below the beam's last exact score (head-room for the
# float32 rounding of prefix scores, relative to their size).
_MARGIN, _RELATIVE_MARGIN = 1e-4, 1e-6


class JointBeamSearcher(S2STransformerBeamSearcher):
    """Fast ``S2STransformerBeamSearcher`` with the same arguments and search.

    Arguments
    ---------
    modules : list
        ``[model, seq_lin]``: HyperConformerASR or SpeechBrain TransformerASR,
        and the output layer.
    temperature : float
        Softmax temperature of the attention decoder.
    **kwargs
        ``S2SBeamSearcher`` arguments (bos/eos, decode ratios, beam size,
        scorer, ...).

    Example
    -------
    >>> from hyperconformer import HyperConformerASR
    >>> from speechbrain.nnet.linear import Linear
    >>> from speechbrain.decoders.scorer import CTCScorer, ScorerBuilder
    >>> model = HyperConformerASR(input_size=8, tgt_vocab=12, d_model=16, nhead=2,
    ...     num_encoder_layers=1, num_decoder_layers=1, d_ffn=32).eval()
    >>> ctc = CTCScorer(Linear(input_size=16, n_neurons=12), blank_index=0, eos_index=2)
    >>> searcher = JointBeamSearcher(
    ...     modules=[model, Linear(input_size=16, n_neurons=12)], bos_index=1,
    ...     eos_index=2, min_decode_ratio=0.0, max_decode_ratio=1.0, beam_size=3,
    ...     scorer=ScorerBuilder(full_scorers=[ctc], weights={"ctc": 0.4}))
    >>> hyps, _, _, _ = searcher(torch.randn(2, 10, 16), torch.tensor([1.0, 0.8]))
    >>> len(hyps)
    2
    """

    # Candidates scored exactly before the bound is checked, in beam sizes;
    # the whole vocabulary after the last (on the demo model the check fails
    # at 4% of the steps of short utterances after 8 x beam).
    exact_candidates = (8,)

    @staticmethod
    def settings(searcher: S2STransformerBeamSearcher) -> dict:
        """The constructor arguments that rebuild ``searcher``."""
        return dict(
            modules=[searcher.model, searcher.fc],
            temperature=searcher.temperature,
            bos_index=searcher.bos_index,
            eos_index=searcher.eos_index,
            min_decode_ratio=searcher.min_decode_ratio,
            max_decode_ratio=searcher.max_decode_ratio,
            beam_size=searcher.beam_size,
            scorer=searcher.scorer,
            return_topk=searcher.return_topk,
            topk=searcher.topk,
            using_eos_threshold=searcher.using_eos_threshold,
            eos_threshold=searcher.eos_threshold,
            length_normalization=searcher.length_normalization,
            using_max_attn_shift=searcher.using_max_attn_shift,
            max_attn_shift=searcher.max_attn_shift,
            minus_inf=searcher.minus_inf,
        )

    @classmethod
    def like(cls, searcher: S2STransformerBeamSearcher, **changes) -> JointBeamSearcher:
        """A fast searcher with ``searcher``'s settings, some changed.

        Example
        -------
        >>> JointBeamSearcher.like(stock_searcher, beam_size=66)  # doctest: +SKIP
        """
        return cls(**(cls.settings(searcher) | changes))

    # ------------------------------------------------------------ planning

    def fallback_reason(self) -> str | None:
        """Why this searcher would run SpeechBrain's search, or None."""
        from speechbrain.decoders.scorer import TransformerLMScorer

        from hyperconformer.incremental import supports_incremental

        if self.using_max_attn_shift:
            return "using_max_attn_shift needs attention weights"
        if self.attn_weight <= 0:
            return "CTC weight 1 (no attention)"
        if not supports_incremental(self.model):
            return f"{type(self.model).__name__} has no incremental decoder"
        if self.scorer is None:
            return None
        full, partial = self.scorer.full_scorers, self.scorer.partial_scorers
        if set(full) - {"ctc", "transformerlm"} or set(partial) - {"ctc"}:
            return "only CTC and Transformer LM scorers are supported"
        ctc = full.get("ctc", partial.get("ctc"))
        if ctc is not None and ctc.ctc_window_size:
            return "ctc_window_size"
        lm = full.get("transformerlm")
        if lm is not None:
            if not isinstance(lm, TransformerLMScorer):
                return "unknown LM scorer"
            try:
                IncrementalLM(lm.lm, lm.temperature)
            except ValueError as err:
                return str(err)
        return None

    def _set_batch(self, batch: int) -> None:
        self.batch_size = batch
        self.n_bh = batch * self.beam_size
        self.beam_offset = torch.arange(batch, device=self.device) * self.beam_size

    # ------------------------------------------------------------ search

    @torch.no_grad()
    def forward(self, enc_states: torch.Tensor, wav_len: torch.Tensor):
        """Beam search, as ``S2SBeamSearcher.forward``.

        Arguments
        ---------
        enc_states : torch.Tensor
            (batch, time, d_model) encoder output.
        wav_len : torch.Tensor
            (batch,) relative lengths.

        Returns
        -------
        hyps, lengths, scores, log_probs
            As SpeechBrain's searcher (top-k tensors if ``return_topk``).
        """
        if self.fallback_reason() is not None:
            return super().forward(enc_states, wav_len)
        batch, time = enc_states.shape[:2]
        beam = self.beam_size
        self.device = enc_states.device
        self.n_out = self.set_n_out()
        enc_lens = torch.round(time * wav_len).int()
        self.min_decode_steps = int(time * self.min_decode_ratio)
        self.max_decode_steps = int(time * self.max_decode_ratio)
        self.min_decode_steps, self.max_decode_steps = self.change_max_decoding_length(
            self.min_decode_steps, self.max_decode_steps
        )
        steps = max(self.max_decode_steps, 1)
        self._set_batch(batch)

        decoder = IncrementalDecoder(self.model, self.fc, self.temperature)
        decoder.start(enc_states, enc_lens, beam, steps)
        full = self.scorer.full_scorers if self.scorer else {}
        partial = self.scorer.partial_scorers if self.scorer else {}
        weights = self.scorer.weights if self.scorer else {}
        ctc = None
        ctc_impl = full.get("ctc", partial.get("ctc"))
        if ctc_impl is not None and weights["ctc"] > 0:
            log_probs = torch.log_softmax(ctc_impl.ctc_fc(enc_states), dim=-1)
            ctc = CTCPrefixScorer(
                log_probs, enc_lens, ctc_impl.blank_index, ctc_impl.eos_index, beam
            )
        lm = None
        if "transformerlm" in full:
            lm = IncrementalLM(
                full["transformerlm"].lm, full["transformerlm"].temperature
            )
            lm.start(self.n_bh, steps, enc_states)

        finished = [[] for _ in range(batch)]
        active = list(range(batch))
        alived = self.init_hypotheses()
        tokens = torch.full((self.n_bh,), self.bos_index, device=self.device)
        scores = None
        for step in range(self.max_decode_steps):
            lists = [finished[i] for i in active]
            done = [len(hyps) == beam for hyps in lists]
            if all(done):
                break
            if any(done):  # complete utterances leave the batch
                keep = [i for i, d in enumerate(done) if not d]
                utts = torch.tensor(keep, device=self.device)
                rows = utts[:, None] * beam + torch.arange(beam, device=self.device)
                rows = rows.flatten()
                decoder.select(rows, utts)
                if lm is not None:
                    lm.select(rows)
                if ctc is not None:
                    ctc.select_utterances(utts, rows)
                alived.alived_seq = alived.alived_seq[rows]
                alived.alived_log_probs = alived.alived_log_probs[rows]
                alived.sequence_scores = alived.sequence_scores[rows]
                tokens = tokens[rows]
                active = [active[i] for i in keep]
                lists = [finished[i] for i in active]
                self._set_batch(len(active))

            attn = self.attn_weight * decoder.step(tokens)  # (rows, vocab)
            attn_kept = attn.clone().reshape(self.batch_size, -1)
            attn = self._set_eos_minus_inf_step(attn, step, self.min_decode_steps)
            attn = self._eos_threshold_step(attn)
            lm_part = None
            if lm is not None:
                lm_part = lm.step(tokens) * weights["transformerlm"]
            scores, candidates, psi = self._select(
                alived.sequence_scores, attn, lm_part, ctc, tokens, step, full
            )
            next_tokens = (candidates % self.n_out).view(self.n_bh)
            scores = scores.view(self.n_bh)
            alived.sequence_scores = scores
            if self.length_normalization:
                alived.sequence_scores = alived.sequence_scores * (step + 1)
            predecessors = (
                torch.div(candidates, self.n_out, rounding_mode="floor")
                + self.beam_offset.unsqueeze(1)
            ).view(self.n_bh)
            decoder.select(predecessors)
            if lm is not None:
                lm.select(predecessors)
            if ctc is not None:
                ctc.advance(predecessors, next_tokens, psi.view(self.n_bh), tokens)
            tokens = next_tokens
            alived = self._update_sequences_and_log_probs(
                attn_kept, tokens, predecessors, candidates, alived
            )
            is_eos = self._update_hyps_and_scores_if_eos_token(
                tokens, alived, lists, scores
            )
            alived.sequence_scores.masked_fill_(is_eos, float("-inf"))

        if scores is not None:
            lists = [finished[i] for i in active]
            self._fill_alived_hyps_with_eos_token(alived, lists, scores)
        self._set_batch(batch)
        empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.tensor(0.0))
        finished = [hyps or [empty] for hyps in finished]  # no step ran
        topk_hyps, topk_lengths, topk_scores, topk_log_probs = (
            self._get_topk_prediction(finished)
        )
        if self.return_topk:
            return topk_hyps, topk_lengths, topk_scores, topk_log_probs
        best_lens = topk_lengths[:, 0]
        hyps = undo_padding(topk_hyps[:, 0, :], best_lens)
        return hyps, best_lens, topk_scores[:, 0], topk_log_probs[:, 0, :]

    def _select(self, seq, attn, lm_part, ctc, last, step, full):
        """The beam's next candidates, as SpeechBrain's scorer + topk.

        Returns (scores, candidates, psi): (batch, beam) normalised scores,
        flat ``beam x vocab`` indices, and their CTC prefix scores (None
        without CTC).
        """
        beam, vocab = self.beam_size, self.n_out
        norm = (step + 1) if self.length_normalization else 1
        order = list(full)
        ctc_first = "ctc" in full and (lm_part is None or order.index("ctc") == 0)
        if ctc is None:
            if "ctc" in full:  # a zero-weight CTC scorer still blocks blank
                attn[:, full["ctc"].blank_index] = MINUS_INF
            total = attn if lm_part is None else attn + lm_part
            total = (seq.unsqueeze(1) + total).view(self.batch_size, -1) / norm
            scores, candidates = total.topk(beam, dim=-1)
            return scores, candidates, None

        w = self.scorer.weights["ctc"]
        blank, eos = ctc.blank, ctc.eos
        psi_prev = ctc.psi_prev
        psi_eos = ctc.eos_scores()
        if "ctc" not in full:  # partial scoring: SpeechBrain's candidates
            before = attn if lm_part is None else attn + lm_part
            k = max(1, min(int(beam * self.scorer.scorer_beam_scale), vocab))
            cand = before.topk(k, dim=-1).indices  # (rows, k)
            rows = torch.arange(self.n_bh, device=self.device)[:, None].expand_as(cand)
            psi = torch.full(
                (self.n_bh, vocab), MINUS_INF, dtype=torch.float64, device=self.device
            )
            psi[rows, cand] = (
                ctc.score(rows.flatten(), cand.flatten(), last)
                .view_as(cand)
                .to(psi.dtype)
            )
            psi[:, eos] = psi_eos
            psi[:, blank] = MINUS_INF
            delta = (psi - psi_prev[:, None]).float()
            total = (seq.unsqueeze(1) + (before + delta * w)).view(self.batch_size, -1)
            scores, candidates = (total / norm).topk(beam, dim=-1)
            return (
                scores,
                candidates,
                psi.view(self.batch_size, -1).gather(1, candidates),
            )

        # Full scoring, exact where it can matter.
        attn[:, blank] = MINUS_INF
        first = attn if ctc_first else attn + lm_part
        after = lm_part if ctc_first else None
        exact = {
            eos: psi_eos,
            blank: torch.full_like(psi_prev, MINUS_INF),
        }
        bound = first + ctc.upper_bounds().float() * w
        for token, value in exact.items():
            bound[:, token] = first[:, token] + (value - psi_prev).float() * w
        if after is not None:
            bound = bound + after
        bound = (seq.unsqueeze(1) + bound).view(self.batch_size, -1)

        chosen = torch.full_like(bound, float("-inf"))
        psi_all = torch.full(
            bound.shape, MINUS_INF, dtype=torch.float64, device=self.device
        )
        # The best candidates by their bound, scored exactly; where the next
        # bound could still beat the beam, more of them, then all.
        todo = torch.arange(self.batch_size, device=self.device)
        for factor in self.exact_candidates:
            m = min(factor * beam, beam * vocab - 1)
            top_values, top_index = bound[todo].topk(m + 1, dim=-1)
            cand = top_index[:, :m]
            rows = (
                torch.div(cand, vocab, rounding_mode="floor") + (todo * beam)[:, None]
            )
            toks = cand % vocab
            psi = ctc.score(rows.flatten(), toks.flatten(), last).view_as(cand)
            psi = torch.where(toks == eos, psi_eos[rows], psi)
            psi = torch.where(toks == blank, MINUS_INF, psi)
            value = first[rows, toks] + (psi - psi_prev[rows]).float() * w
            if after is not None:
                value = value + after[rows, toks]
            value = seq[rows] + value
            chosen[todo[:, None], cand] = value
            psi_all[todo[:, None], cand] = psi
            kth = value.topk(beam, dim=-1).values[:, -1]
            margin = _MARGIN + _RELATIVE_MARGIN * kth.abs()
            safe = (top_values[:, m] < kth - margin) & (kth > MINUS_INF / 1e5)
            todo = todo[~safe]
            if not todo.numel():
                break
        # Elsewhere a candidate beyond them might enter the beam: score all.
        if todo.numel():
            psi = ctc.score_all(todo, last)  # (n, beam, vocab)
            rows = todo[:, None] * beam + torch.arange(beam, device=self.device)
            psi[:, :, eos] = psi_eos[rows]
            psi[:, :, blank] = MINUS_INF
            value = first[rows] + (psi - psi_prev[rows][..., None]).float() * w
            if after is not None:
                value = value + after[rows]
            value = seq[rows][..., None] + value
            chosen[todo] = value.view(len(todo), -1)
            psi_all[todo] = psi.view(len(todo), -1)
        scores, candidates = (chosen / norm).topk(beam, dim=-1)
        return scores, candidates, psi_all.gather(1, candidates)
