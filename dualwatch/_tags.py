"""The tag vocabulary: names dualwatch writes, and the names of other tools' logs it reads.

The write side (the stats engine, the watcher, the console block) and the read side (the
monitor's report, the plot) meet here, so a renamed tag is renamed once.
"""

from __future__ import annotations

#: head of the model-level gradient tags: ``train/gradient/total_norm``, ``.../<group>/share``
GRADIENT = "train/gradient"
HEALTH = f"{GRADIENT}/health"
TOTAL_NORM = f"{GRADIENT}/total_norm"
#: how many watched parameters have no gradient (exactly zero, or none while others have one), and
#: how many did not move since the previous check with a negligible gradient, and with a
#: non-negligible one (not updating): the health findings
ZERO_GRAD_COUNT = f"{GRADIENT}/zero_grad_params"
NEGLIGIBLE_GRAD_COUNT = f"{GRADIENT}/negligible_grad_params"
NOT_UPDATING_COUNT = f"{GRADIENT}/not_updating_params"
#: head of the model totals: ``Model/Gradient_Norm``, ``Model/Parameter_Norm``... (the VisualDL guide's)
MODEL = "Model"
#: the statistics of one parameter, tagged ``<prefix>/<parameter>/<stat>``
PARAMETER_STATS = (
    "weight_mean",
    "weight_std",
    "weight_min",
    "weight_max",
    "weight_change",
    "grad_mean",
    "grad_std",
    "grad_min",
    "grad_max",
    "grad_norm",
)
#: the training curves ``Watcher.log_training`` and ``end_epoch`` write (the VisualDL guide's names)
LOSS, VAL_LOSS, LEARNING_RATE = "Loss/Train", "Loss/Validation", "Learning_Rate"
EPOCH_DURATION = "Time/Epoch_Duration"
#: head of the loss breakdown ``Watcher.log_losses`` writes
DETAILED_LOSS = "train/detailed_loss"

# What the monitor and the plot look for, in the order they are preferred: dualwatch's tags, then
# those of the other tools whose logs they read (Lightning, MMEngine, Paddle's callbacks...).
# The last: the total in the loss breakdown (MMEngine calls its total ``loss``), all that a run of
# dualwatch's MMEngine hook writing beside MMEngine's own logs holds of the loss.
LOSS_TAGS = (LOSS, "train/loss", "loss", "TRAIN/loss", "train_loss", f"{DETAILED_LOSS}/loss")
VAL_LOSS_TAGS = (VAL_LOSS, "val/loss", "eval/loss", "valid/loss", "val_loss")
LR_TAGS = (LEARNING_RATE, "train/learning_rate", "lr", "train/lr", "base_lr")
GRAD_NORM_TAGS = (TOTAL_NORM, f"{MODEL}/Gradient_Norm", "grad_norm")
EPOCH_TAGS = ("epoch", "train/epoch", "Epoch")

#: the group both viewers open on. VisualDL and TensorBoard lay tag groups (the part before the
#: first ``/``) out sorted by name, whatever order they were written in: VisualDL ignoring case,
#: opening only the first; TensorBoard upper case first, opening the first two. A leading digit
#: sorts before every letter in both, so this group comes first. A run a Watcher writes to repeats
#: its loss and global gradient norm in it (``Writer(overview=...)`` forces it on or off).
OVERVIEW = "0_overview"
#: what the overview repeats: each of its tags, and the tags it repeats, in the order preferred
#: (the first of them a run writes is the one repeated, for the whole run)
OVERVIEW_SOURCES = {f"{OVERVIEW}/loss": LOSS_TAGS, f"{OVERVIEW}/grad_norm": GRAD_NORM_TAGS}


def group_of_share(tag: str) -> str | None:
    """``backbone`` for ``train/gradient/backbone/share``; None for any other tag."""
    if tag.startswith(f"{GRADIENT}/") and tag.endswith("/share") and tag.count("/") == 3:
        return tag[len(GRADIENT) + 1 : -len("/share")]
    return None
