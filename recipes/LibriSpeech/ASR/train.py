#!/usr/bin/env python3
"""LibriSpeech ASR recipe: HyperConformer (or Conformer) encoder, Transformer
decoder, joint CTC/attention training and beam search.

The yaml file holds every choice (model class and size, tokenizer, features,
augmentation, schedule, decoding), so the same script trains the HyperConformer
and the stock SpeechBrain Conformer baseline:

    python recipes/LibriSpeech/ASR/train.py \\
        hparams/LibriSpeech/hyperconformer_8M.yaml \\
        --data_folder=/data/LibriSpeech [--output_folder=results/hc8m]

    # several processes (gloo on CPU, nccl on GPU), optionally mixed precision
    torchrun --nproc_per_node=4 recipes/LibriSpeech/ASR/train.py \\
        hparams/LibriSpeech/hyperconformer_22M.yaml --data_folder=... \\
        --device=cuda --precision=bf16

Steps: data preparation (CSV files), SentencePiece tokenizer, training with
checkpoints that survive an interruption, test decoding of every test split
with the average of the best checkpoints (WER in <output_folder>/wer_<split>.txt),
and export of a ready-to-use model folder to <output_folder>/model/.
"""

import csv
import dataclasses
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import sentencepiece as spm
import soundfile as sf
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

# librispeech_prepare.py sits next to this script (on sys.path when it runs).
from librispeech_prepare import PrepareError, prepare_librispeech
from speechbrain.utils.distributed import ddp_barrier, if_main_process, run_on_main

from hyperconformer.export import export_model_folder

logger = logging.getLogger(__name__)


class DataError(Exception):
    """A problem with the corpus or its files, reported in one line."""


class ASR(sb.core.Brain):
    """Joint CTC/attention encoder-decoder ASR."""

    def augmenters(self, stage) -> dict:
        """The yaml's waveform and feature augmenters that apply at ``stage``,
        in the order they run (none outside training)."""
        if stage != sb.Stage.TRAIN:
            return {}
        return {
            key: getattr(self.hparams, key, None)
            for key in ("wav_augment", "fea_augment")
        }

    def replicate_labels(self, stage, labels):
        """``labels`` (one row per utterance) repeated as the augmenters
        repeated the batch in the last forward pass."""
        for augmenter in self.augmenters(stage).values():
            if augmenter is not None:
                labels = augmenter.replicate_labels(labels)
        return labels

    def compute_forward(self, batch, stage):
        """Waveforms -> CTC and decoder log-probabilities (+ hypotheses)."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        tokens_bos, _ = batch.tokens_bos

        # Noise and reverberation (wav_augment: only the demo yamls define
        # it), then SpecAugment. An augmenter may return more rows than it got
        # (concat_original, repeat_augment > 1): lengths and targets follow it
        # row for row (see replicate_labels).
        augmenters = self.augmenters(stage)
        if augmenters.get("wav_augment") is not None:
            wavs, wav_lens = augmenters["wav_augment"](wavs, wav_lens)
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(
            feats, wav_lens, epoch=self.hparams.epoch_counter.current
        )
        if augmenters.get("fea_augment") is not None:
            feats, wav_lens = augmenters["fea_augment"](feats, wav_lens)
        tokens_bos = self.replicate_labels(stage, tokens_bos)

        src = self.modules.CNN(feats)
        # Dynamic chunk training (streaming yamls only): a chunked or offline
        # encoder per training batch, the yaml's choice for dev and test.
        # Training epochs before dynchunktrain_start_epoch are all offline.
        chunking = {}
        sampler = getattr(self.hparams, "dynchunktrain_config_sampler", None)
        if sampler is not None:
            config = sampler(stage)
            start = getattr(self.hparams, "dynchunktrain_start_epoch", 1)
            if stage == sb.Stage.TRAIN and self.hparams.epoch_counter.current < start:
                config = None
            chunking["dynchunktrain_config"] = config
        enc_out, dec_out = self.modules.Transformer(
            src, tokens_bos, wav_lens, pad_idx=self.hparams.pad_index, **chunking
        )
        if stage == sb.Stage.TRAIN and self._offline_too(chunking):
            # A chunked batch also trains offline, from the same front-end
            # output: the two passes are stacked as one batch of twice the
            # rows, and compute_objectives repeats the targets to match.
            offline = self.modules.Transformer(
                src, tokens_bos, wav_lens, pad_idx=self.hparams.pad_index
            )
            enc_out = torch.cat((enc_out, offline[0]))
            dec_out = torch.cat((dec_out, offline[1]))
            wav_lens = torch.cat((wav_lens, wav_lens))
        p_ctc = self.hparams.log_softmax(self.modules.ctc_lin(enc_out))
        p_seq = self.hparams.log_softmax(self.modules.seq_lin(dec_out))

        hyps = None
        if stage == sb.Stage.VALID and self._decode_valid():
            hyps, _, _, _ = self.hparams.valid_search(enc_out.detach(), wav_lens)
        elif stage == sb.Stage.TEST:
            hyps, _, _, _ = self.test_search(enc_out.detach(), wav_lens)
        return p_ctc, p_seq, wav_lens, hyps

    def _offline_too(self, chunking: dict) -> bool:
        """Whether this chunked training batch also trains the offline
        encoder (``dynchunktrain_offline_too`` in the yaml)."""
        return chunking.get("dynchunktrain_config") is not None and getattr(
            self.hparams, "dynchunktrain_offline_too", False
        )

    def _decode_valid(self):
        # Beam search is slow: only every valid_search_interval epochs and at
        # the last one, so the final dev WER is reported (0: never).
        interval = self.hparams.valid_search_interval
        counter = self.hparams.epoch_counter
        return interval > 0 and (
            counter.current % interval == 0 or counter.current >= counter.limit
        )

    def compute_objectives(self, predictions, batch, stage):
        """Weighted sum of the CTC and label-smoothed attention losses."""
        p_ctc, p_seq, wav_lens, hyps = predictions
        tokens_eos, tokens_eos_lens = batch.tokens_eos
        tokens, tokens_lens = batch.tokens
        tokens_eos, tokens_eos_lens, tokens, tokens_lens = (
            self.replicate_labels(stage, t)
            for t in (tokens_eos, tokens_eos_lens, tokens, tokens_lens)
        )
        # Chunked and offline passes of one batch (dynchunktrain_offline_too).
        passes = p_ctc.size(0) // tokens.size(0)
        if passes > 1:
            tokens_eos, tokens_eos_lens, tokens, tokens_lens = (
                torch.cat([t] * passes)
                for t in (tokens_eos, tokens_eos_lens, tokens, tokens_lens)
            )

        loss_seq = self.hparams.seq_cost(p_seq, tokens_eos, length=tokens_eos_lens)
        loss_ctc = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, tokens_lens)
        weight = self.hparams.ctc_weight
        loss = weight * loss_ctc + (1 - weight) * loss_seq

        if stage != sb.Stage.TRAIN:
            self.acc_metric.append(p_seq, tokens_eos, tokens_eos_lens)
            if hyps is not None:
                predicted = [
                    self.tokenizer.decode_ids(list(map(int, h))).split() for h in hyps
                ]
                targets = [wrd.split() for wrd in batch.wrd]
                self.wer_metric.append(batch.id, predicted, targets)
        return loss

    def on_fit_start(self):
        """Recovers the checkpoint, then gives a schedule that ends at zero
        (yaml ``num_training_steps: null``) this run's length in steps: a run
        resumed with more epochs stretches it rather than training at zero."""
        super().on_fit_start()
        if self.run_steps is not None:
            self.hparams.lr_annealing.num_training_steps = self.run_steps

    def on_fit_batch_start(self, batch, should_step):
        """Sets the learning rate of the yaml's schedule before each optimiser step."""
        if should_step:
            self.hparams.lr_annealing(self.optimizer)

    def on_stage_start(self, stage, epoch=None):
        """Fresh metrics for each dev/test pass."""
        if stage != sb.Stage.TRAIN:
            self.acc_metric = self.hparams.acc_computer()
            self.wer_metric = self.hparams.error_rate_computer()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, checkpoints after each dev pass, writes the test WER file."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["ACC"] = self.acc_metric.summarize()
        if self.wer_metric.scores:
            stats["WER"] = self.wer_metric.summarize("error_rate")

        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr, "steps": self.optimizer_step},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            # Keeps the best checkpoints for averaging, plus the latest one
            # for resuming.
            self.checkpointer.save_and_keep_only(
                meta={"ACC": stats["ACC"], "epoch": epoch},
                max_keys=["ACC"],
                num_to_keep=self.hparams.avg_checkpoints,
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "test split": self.test_split,
                    "epochs trained": self.hparams.epoch_counter.current,
                },
                test_stats=stats,
            )
            if if_main_process():
                with open(self.wer_file, "w", encoding="utf-8") as out:
                    self.wer_metric.write_stats(out)

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Tests the average of the best checkpoints."""
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        self.load_average(max_key=max_key, min_key=min_key)

    def load_average(self, max_key=None, min_key=None):
        """Loads the parameter average of the best `avg_checkpoints` checkpoints."""
        ckpts = self.checkpointer.find_checkpoints(
            max_key=max_key,
            min_key=min_key,
            max_num_checkpoints=self.hparams.avg_checkpoints,
        )
        if not ckpts:
            logger.warning("No checkpoint to average: keeping the current model")
            return
        averaged = sb.utils.checkpoints.average_checkpoints(
            ckpts, recoverable_name="model"
        )
        self.hparams.model.load_state_dict(averaged, strict=True)
        logger.info("Using the average of %d checkpoints", len(ckpts))


def read_audio(path, sample_rate):
    """Reads a mono waveform with soundfile, with a one-line error if unreadable."""
    try:
        signal, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad files
        raise DataError(f"cannot read audio file {path}: {err}") from None
    if rate != sample_rate:
        raise DataError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz")
    return torch.from_numpy(signal.mean(axis=1))


def split_csvs(hparams, key):
    """The CSV files written by the data preparation for one group of splits."""
    return [Path(hparams["save_folder"]) / f"{split}.csv" for split in hparams[key]]


def load_csvs(paths, data_folder):
    """One DynamicItemDataset from one or more prepared CSV files."""
    data = {}
    for path in paths:
        if not path.is_file():
            raise DataError(f"missing prepared file {path} (run without skip_prep)")
        rows = sb.dataio.dataio.load_data_csv(
            path, replacements={"data_root": data_folder}
        )
        duplicated = data.keys() & rows.keys()
        if duplicated:
            raise DataError(f"{path}: utterance id {min(duplicated)} seen twice")
        data.update(rows)
    return sb.dataio.dataset.DynamicItemDataset(data)


def train_tokenizer(train_csvs, model_prefix, hparams):
    """Trains the SentencePiece model on the training transcripts."""
    text_file = f"{model_prefix}_text.txt"
    with open(text_file, "w", encoding="utf-8") as out:
        for path in train_csvs:
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    out.write(row["wrd"] + "\n")
    try:
        spm.SentencePieceTrainer.train(
            input=text_file,
            model_prefix=model_prefix,
            vocab_size=hparams["output_neurons"],
            model_type=hparams["token_type"],
            character_coverage=1.0,
            # CTC blank shares id 0 with <unk>, which never occurs in targets.
            unk_id=hparams["blank_index"],
            bos_id=hparams["bos_index"],
            eos_id=hparams["eos_index"],
            pad_id=-1,
            minloglevel=2,
        )
    except RuntimeError as err:
        # e.g. "Vocabulary size too high (5000). Please set it to a value <= 301."
        raise DataError(
            f"tokenizer training failed: {str(err).strip()} "
            "(override --output_neurons for a small corpus)"
        ) from None


def prepare_tokenizer(hparams):
    """Path of the SentencePiece model: the given one, or one trained here."""
    if hparams["tokenizer_file"]:
        return Path(hparams["tokenizer_file"])
    prefix = Path(hparams["save_folder"]) / "tokenizer"
    # Every rank takes the barrier; only the main process looks at the disk,
    # so a rank that sees the file late cannot skip a barrier rank 0 entered.
    run_on_main(
        train_tokenizer_if_missing,
        args=[split_csvs(hparams, "train_splits"), str(prefix), hparams],
    )
    return prefix.with_suffix(".model")


def train_tokenizer_if_missing(train_csvs, model_prefix, hparams):
    """Trains the tokenizer unless a previous run did: a resumed run must keep
    the token ids it was trained with."""
    if not Path(model_prefix).with_suffix(".model").is_file():
        train_tokenizer(train_csvs, model_prefix, hparams)


def dataio_prepare(hparams, tokenizer):
    """Train/dev/test datasets with their audio and text pipelines."""
    data_folder = hparams["data_folder"]
    train_data = load_csvs(split_csvs(hparams, "train_splits"), data_folder)
    longest = hparams["avoid_if_longer_than"]
    train_data = train_data.filtered_sorted(
        key_max_value={} if longest is None else {"duration": longest},
        sort_key=None if hparams["sorting"] == "random" else "duration",
        reverse=hparams["sorting"] == "descending",
    )
    valid_data = load_csvs(split_csvs(hparams, "dev_splits"), data_folder)
    valid_data = valid_data.filtered_sorted(sort_key="duration")
    test_sets = {
        split: load_csvs([path], data_folder).filtered_sorted(sort_key="duration")
        for split, path in zip(
            hparams["test_splits"], split_csvs(hparams, "test_splits"), strict=True
        )
    }
    eval_sets = [valid_data, *test_sets.values()]
    sample_rate = hparams["sample_rate"]
    speed_perturb = hparams["speed_perturb"]

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_audio(wav, sample_rate)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline_train(wav):
        sig = read_audio(wav, sample_rate)
        # Done here, per utterance, so that it runs in the loader workers.
        if speed_perturb is not None:
            sig = speed_perturb(sig.unsqueeze(0)).squeeze(0)
        return sig

    sb.dataio.dataset.add_dynamic_item([train_data], audio_pipeline_train)
    sb.dataio.dataset.add_dynamic_item(eval_sets, audio_pipeline)

    @sb.utils.data_pipeline.takes("wrd")
    @sb.utils.data_pipeline.provides("wrd", "tokens_bos", "tokens_eos", "tokens")
    def text_pipeline(wrd):
        yield wrd
        ids = tokenizer.encode_as_ids(wrd)
        yield torch.LongTensor([hparams["bos_index"], *ids])
        yield torch.LongTensor([*ids, hparams["eos_index"]])
        yield torch.LongTensor(ids)

    all_sets = [train_data, *eval_sets]
    sb.dataio.dataset.add_dynamic_item(all_sets, text_pipeline)
    sb.dataio.dataset.set_output_keys(
        all_sets, ["id", "sig", "wrd", "tokens_bos", "tokens_eos", "tokens"]
    )

    train_opts = {"num_workers": hparams["num_workers"]}
    if hparams["dynamic_batching"]:
        train_opts["batch_sampler"] = sb.dataio.sampler.DynamicBatchSampler(
            train_data,
            max_batch_length=hparams["max_batch_len"],
            num_buckets=hparams["num_buckets"],
            length_func=lambda x: x["duration"],
            shuffle=True,
            # "ascending": short batches first in every epoch (a curriculum).
            batch_ordering=hparams["sorting"],
            max_batch_ex=hparams["max_batch_ex"],
        )
    else:
        train_opts["batch_size"] = hparams["batch_size"]
        train_opts["shuffle"] = hparams["sorting"] == "random"
    valid_opts = {"batch_size": hparams["valid_batch_size"]}
    test_opts = {"batch_size": hparams["test_batch_size"]}
    return train_data, valid_data, test_sets, train_opts, valid_opts, test_opts


# A folder laid out like SpeechBrain's published LM + tokenizer pair.
LM_FOLDER_FILES = {"lm_file": "lm.ckpt", "tokenizer_file": "tokenizer.ckpt"}


def resolve_language_model(hparams):
    """Sets lm_file and tokenizer_file from pretrained_lm_tokenizer_path, if given.

    The ASR model must then use the LM's tokenizer: token ids are shared.
    """
    folder = hparams.get("pretrained_lm_tokenizer_path")
    if not folder:
        return
    given = [key for key in LM_FOLDER_FILES if hparams[key]]
    if given:
        raise DataError(
            f"pretrained_lm_tokenizer_path and {' and '.join(given)} are both set: "
            "give one of them"
        )
    for key, name in LM_FOLDER_FILES.items():
        path = Path(folder) / name
        if not path.is_file():
            raise DataError(
                f"pretrained_lm_tokenizer_path {folder} has no {name} "
                f"(expected {', '.join(LM_FOLDER_FILES.values())})"
            )
        hparams[key] = str(path)


def load_language_model(hparams):
    """The Transformer LM of ``lm_model`` with the weights of ``lm_file``."""
    path = Path(hparams["lm_file"])
    if not path.is_file():
        raise DataError(f"lm_file {path} not found")
    lm = hparams["lm_model"]()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        lm.load_state_dict(state)
    except Exception as err:  # pickle errors, missing or misshapen weights
        first = str(err).strip().splitlines()[0]
        raise DataError(
            f"lm_file {path} does not fit lm_model (lm_* sizes, output_neurons): "
            f"{first}"
        ) from None
    return lm.eval()


def make_test_search(hparams, device):
    """The test beam searcher: joint CTC/attention, plus the LM if one is given."""
    scorer = hparams["scorer"]
    if hparams["lm_file"]:
        lm = load_language_model(hparams).to(device)
        scorer = hparams["scorer_with_lm"](
            full_scorers=[hparams["ctc_scorer"], hparams["lm_scorer"](lm)]
        )
    return hparams["test_search"](scorer=scorer)


def fix_run_opts(run_opts):
    """gloo on CPU and one GPU per process, unless given on the command line.

    Also makes --optimizer_step_limit an int (SpeechBrain 1.1.2 parses a str).
    """
    changes = {}
    if isinstance(run_opts.optimizer_step_limit, str):
        changes["optimizer_step_limit"] = int(run_opts.optimizer_step_limit)
    device = run_opts.device
    local_rank = os.environ.get("LOCAL_RANK")
    if device == "cuda" and local_rank is not None:
        changes["device"] = device = f"cuda:{local_rank}"
    device = device or sb.utils.distributed.infer_device()
    given = run_opts.overridden_args
    if "distributed_backend" not in given and not device.startswith("cuda"):
        changes["distributed_backend"] = "gloo"
    if not changes:
        return run_opts
    return dataclasses.replace(
        run_opts, **changes, overridden_args=given | changes.keys()
    )


# cuFFT plans kept by PyTorch on each GPU (its default is 4,096).
FFT_PLANS = 16


def bound_fft_plans(device: str) -> None:
    """Keeps at most FFT_PLANS cuFFT plans on a CUDA ``device``.

    SpeechBrain's AddReverb convolves by FFT, and every new padded batch length
    makes a new plan that holds GPU memory: after 2,400 lengths the default
    cache held 82 GiB of an H200 (16 plans: 0.35 GiB), and demo trainings with
    reverberation died with CUFFT_INTERNAL_ERROR in their 7th epoch.
    """
    if device.startswith("cuda"):
        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        torch.backends.cuda.cufft_plan_cache[index].max_size = FFT_PLANS


def optimizer_steps(hparams, train_data, train_opts) -> int:
    """Optimiser steps of the whole run, on this process."""
    sampler = train_opts.get("batch_sampler")
    if sampler is not None:
        batches = len(sampler)
    else:
        batches = -(-len(train_data) // hparams["batch_size"])
    if torch.distributed.is_initialized():  # each process takes its share
        batches = -(-batches // torch.distributed.get_world_size())
    per_epoch = -(-batches // hparams["grad_accumulation_factor"])
    return per_epoch * hparams["number_of_epochs"]


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    run_opts = fix_run_opts(run_opts)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    resolve_language_model(hparams)
    data_folder = Path(hparams["data_folder"])
    if not data_folder.is_dir():
        raise DataError(f"data_folder {data_folder} is not a directory")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if torch.distributed.is_initialized():
        logger.info(
            "Distributed run: %d processes, %s backend",
            torch.distributed.get_world_size(),
            torch.distributed.get_backend(),
        )

    if not hparams["skip_prep"]:
        try:
            run_on_main(
                prepare_librispeech,
                kwargs={
                    "data_folder": str(data_folder),
                    "save_folder": hparams["save_folder"],
                    "tr_splits": hparams["train_splits"],
                    "dev_splits": hparams["dev_splits"],
                    "te_splits": hparams["test_splits"],
                },
            )
        except PrepareError as err:
            raise DataError(str(err)) from None

    tokenizer_file = prepare_tokenizer(hparams)
    if not tokenizer_file.is_file():
        raise DataError(f"tokenizer file {tokenizer_file} not found")
    tokenizer = hparams["tokenizer"]
    tokenizer.load(str(tokenizer_file))
    if tokenizer.get_piece_size() != hparams["output_neurons"]:
        raise DataError(
            f"tokenizer {tokenizer_file} has {tokenizer.get_piece_size()} pieces "
            f"but output_neurons is {hparams['output_neurons']}"
        )

    train_data, valid_data, test_sets, train_opts, valid_opts, test_opts = (
        dataio_prepare(hparams, tokenizer)
    )

    asr = ASR(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    asr.tokenizer = tokenizer
    bound_fft_plans(asr.device)
    # Brain then calls set_epoch() on it: new batches every epoch, the same
    # ones when an interrupted epoch is resumed. (Under DDP, Brain wraps it.)
    asr.train_sampler = train_opts.get("batch_sampler")
    asr.test_search = make_test_search(hparams, asr.device)
    scheduler = hparams["lr_annealing"]
    asr.run_steps = None
    if getattr(scheduler, "num_training_steps", 0) is None:
        asr.run_steps = optimizer_steps(hparams, train_data, train_opts)

    start, cpu_start = time.perf_counter(), time.process_time()
    asr.fit(
        hparams["epoch_counter"],
        train_data,
        valid_data,
        train_loader_kwargs=train_opts,
        valid_loader_kwargs=valid_opts,
    )

    train_seconds = time.perf_counter() - start
    train_cpu_seconds = time.process_time() - cpu_start

    output_folder = Path(hparams["output_folder"])
    summary = {
        "hparams": Path(hparams_file).name,
        "parameters": sum(p.numel() for p in hparams["model"].parameters()),
        "train_seconds": round(train_seconds, 2),
        # CPU time of this process: comparable across runs on a busy machine.
        "train_cpu_seconds": round(train_cpu_seconds, 2),
        "epochs": hparams["epoch_counter"].current,
        "test": {},
    }
    for split, test_data in test_sets.items():
        asr.test_split = split
        asr.wer_file = output_folder / f"wer_{split}.txt"
        start, cpu_start = time.perf_counter(), time.process_time()
        asr.evaluate(test_data, max_key="ACC", test_loader_kwargs=dict(test_opts))
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        audio = sum(test_data.data[i]["duration"] for i in test_data.data_ids)
        summary["test"][split] = {
            "wer": round(asr.wer_metric.summarize("error_rate"), 3),
            "utterances": len(test_data),
            "audio_seconds": round(audio, 2),
            "decode_seconds": round(seconds, 2),
            "decode_cpu_seconds": round(cpu_seconds, 2),
            "rtf": round(seconds / audio, 4),
        }
    if not test_sets:
        asr.load_average(max_key="ACC")
    # Peak resident memory of this process, in MiB (ru_maxrss is KiB on Linux).
    summary["peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )

    # The averaged model is what gets exported.
    if if_main_process():
        # From the resolved copy saved at the start of this run, which
        # matches the model even if the yaml was edited since.
        export_model_folder(
            output_folder / "model",
            output_folder / "hyperparams.yaml",
            asr_model=hparams["model"],
            normalizer=hparams["normalize"],
            tokenizer_file=tokenizer_file,
            lm_file=hparams["lm_file"] or None,
        )
        with open(output_folder / "summary.json", "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=2)
        logger.info("Model exported to %s", output_folder / "model")


def leave_distributed_run() -> None:
    """Ends a torchrun process once every rank is done, without finalizing.

    A gloo worker thread may still be releasing the tensors of a finished
    collective while the interpreter finalizes; it then needs the GIL, cannot
    take it, and the rank aborts ("terminate called without an active
    exception"), failing a run whose work is all saved. The DDP wrappers keep
    the process group, and so those threads, alive past
    destroy_process_group(), so they cannot be joined first. Each rank waits
    for the others (rank 0 exports the model), flushes its logs and output,
    and leaves at once.
    """
    ddp_barrier()
    torch.distributed.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except DataError as err:
        # From a loader worker, the message also holds the worker's traceback.
        message = str(err).strip().splitlines()[-1]
        sys.exit(f"error: {message.removeprefix('DataError: ')}")
    if torch.distributed.is_initialized():
        leave_distributed_run()
