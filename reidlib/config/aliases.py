"""The one table of trial-parameter aliases: the names users of the old sweep scripts know.

Both sides of the trial contract use it: the trial notebook's ``parameters`` cell and the sweep
spec's parameter names. A name that is not an alias must be a dotted YACS key.
"""

ALIASES = {
    "base_lr": "SOLVER.BASE_LR",
    "weight_decay": "SOLVER.WEIGHT_DECAY",
    "warmup_factor": "SOLVER.WARMUP_FACTOR",
    "warmup_iters": "SOLVER.WARMUP_ITERS",
    "margin": "SOLVER.MARGIN",
    "ims_per_batch": "SOLVER.IMS_PER_BATCH",
    "max_epochs": "SOLVER.MAX_EPOCHS",
    "num_instance": "DATALOADER.NUM_INSTANCE",
    "optimizer": "SOLVER.OPTIMIZER_NAME",
    "momentum": "SOLVER.MOMENTUM",
    "center_loss_weight": "SOLVER.CENTER_LOSS_WEIGHT",
    "label_smooth": "MODEL.IF_LABELSMOOTH",
    "re_prob": "INPUT.RE_PROB",
    "backbone": "MODEL.NAME",
    "seed": "SEED",
    "output_dir": "OUTPUT_DIR",
    "device": "MODEL.DEVICE",
}
