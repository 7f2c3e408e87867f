"""Every training knob, with its default (reid-strong-baseline's ``config/defaults.py``, same names).

A YACS file written for reid-strong-baseline loads unchanged. Keys that upstream does not have are
marked "ours". Overrides are type-checked against these defaults (see ``reidlib.config.overrides``), then
checked against what each key accepts (``reidlib.config.checks``).
"""
from yacs.config import CfgNode as CN

DEFAULT_WANDB_PROJECT = "reid-sweep"  # where runs go when neither a config, a flag nor WANDB_PROJECT says

_C = CN()

# ---------------------------------------------------------------------------------------------------
# MODEL
# ---------------------------------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.DEVICE = "cuda"  # "cuda", "cpu" or "auto" (ours: cuda when available)
_C.MODEL.DEVICE_ID = "0"  # GPU ids, as upstream; the sweep driver sets CUDA_VISIBLE_DEVICES instead
_C.MODEL.NAME = "resnet50"  # backbone: resnet18/34/50/101/152 (torchvision; checks.BACKBONE_NAMES)
_C.MODEL.LAST_STRIDE = 1  # stride of the last ResNet stage (1 = the Bag of Tricks' larger feature map)
_C.MODEL.PRETRAIN_PATH = ""  # state dict to start from when PRETRAIN_CHOICE is 'imagenet' or 'self'
_C.MODEL.PRETRAIN_CHOICE = "imagenet"  # 'imagenet', 'self' (a trained reid model) or 'none' (ours: random init)
_C.MODEL.NECK = "bnneck"  # 'bnneck' (BN between pooled feature and classifier) or 'no'
_C.MODEL.IF_WITH_CENTER = "no"  # 'yes' adds center loss
_C.MODEL.METRIC_LOSS_TYPE = "triplet"  # 'softmax' or 'triplet'; with IF_WITH_CENTER 'yes': 'center' or 'triplet_center'

# label-smoothing cross entropy (epsilon 0.1): 'on' or 'off'; as upstream, SAMPLER 'softmax' without
# center loss trains with plain cross entropy whatever this says
_C.MODEL.IF_LABELSMOOTH = "on"
# ours: 'no' runs the ResNet stem conv1 -> bn1 -> maxpool as reid-strong-baseline trained every model and
# checkpoint (its ReLU after bn1 is commented out); 'yes' puts torchvision's ReLU back
_C.MODEL.STEM_RELU = "no"
_C.MODEL.CHANNELS_LAST = "yes"  # ours: channels_last memory format on CUDA (faster convolutions): 'yes' or 'no'

# ---------------------------------------------------------------------------------------------------
# INPUT
# ---------------------------------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.SIZE_TRAIN = [384, 128]  # [height, width] of training images
_C.INPUT.SIZE_TEST = [384, 128]  # [height, width] of test images
_C.INPUT.PROB = 0.5  # probability of horizontal flip
_C.INPUT.RE_PROB = 0.5  # probability of random erasing
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]  # normalisation mean (ImageNet)
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]  # normalisation std (ImageNet)
_C.INPUT.PADDING = 10  # zero padding before the random crop
# ours: a split whose decoded images fit this budget is cached as uint8 tensors (resized once) and
# augmented batched on the training device; 0 = always the per-sample PIL path
_C.INPUT.CACHE_BUDGET_MB = 4096  # ours: memory budget of the decoded-image cache, in MB

# ---------------------------------------------------------------------------------------------------
# DATASETS
# ---------------------------------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.NAMES = "market1501"  # 'market1501', 'dukemtmc', 'msmt17', 'aihub_kaist' or 'synthetic' (checks.DATASET_NAMES)
_C.DATASETS.ROOT_DIR = "./data"  # folder that holds the dataset folders
_C.DATASETS.TRAIN_FOLDER = "bounding_box_train"  # as forks use: training images folder
_C.DATASETS.QUERY_FOLDER = "query"  # query images folder
_C.DATASETS.GALLERY_FOLDER = "bounding_box_test"  # gallery images folder
# Ours: a validation split carved from the training identities, so that a sweep selects on people the
# test set never sees. Their images leave training and form a query/gallery pair (one query per
# identity and camera, the rest gallery; identities seen by one camera only are never drawn): val/*.
# query/gallery stay the test set: test/*, evaluated once at the end of a run.
_C.DATASETS.VAL_IDS = 0  # ours: training identities held out for validation; 0 = none (upstream: val/* is query/gallery)
_C.DATASETS.VAL_SEED = 0  # ours: which identities are held out; the split depends only on the dataset and this seed

# Ours: the generated dataset (DATASETS.NAMES 'synthetic'); made on first use under ROOT_DIR/synthetic
_C.DATASETS.SYNTHETIC = CN()
_C.DATASETS.SYNTHETIC.NUM_TRAIN_IDS = 64  # identities in bounding_box_train
_C.DATASETS.SYNTHETIC.NUM_TEST_IDS = 48  # identities in query/bounding_box_test
_C.DATASETS.SYNTHETIC.NUM_CAMERAS = 4  # cameras (Market-1501 has 6)
_C.DATASETS.SYNTHETIC.IMAGES_PER_CAMERA = 2  # images of each identity per camera
_C.DATASETS.SYNTHETIC.IMAGE_SIZE = [64, 32]  # [height, width] of the written JPEGs
_C.DATASETS.SYNTHETIC.SEED = 0  # the generator is deterministic given this seed

# ---------------------------------------------------------------------------------------------------
# DATALOADER
# ---------------------------------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 8  # loader worker processes
_C.DATALOADER.SAMPLER = "softmax"  # 'softmax' (shuffle) or 'triplet'/'softmax_triplet' (P identities x K instances)
_C.DATALOADER.NUM_INSTANCE = 16  # K: images per identity in a batch for the PK sampler

# ---------------------------------------------------------------------------------------------------
# SOLVER
# ---------------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER_NAME = "Adam"  # a torch.optim class name: 'Adam', 'SGD', 'AdamW', ... (checks.OPTIMIZER_NAMES)
_C.SOLVER.MAX_EPOCHS = 50  # epochs to train
_C.SOLVER.BASE_LR = 3e-4  # learning rate
_C.SOLVER.BIAS_LR_FACTOR = 2  # learning rate of biases = BASE_LR * BIAS_LR_FACTOR
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.MARGIN = 0.3  # triplet loss margin: hinge max(0, ap - an + MARGIN), 0 included (as upstream)
_C.SOLVER.SOFT_MARGIN = "no"  # ours: 'yes' uses the soft margin log(1 + exp(ap - an)) instead (MARGIN unused)
_C.SOLVER.CLUSTER_MARGIN = 0.3  # upstream's cluster loss margin (kept for file compatibility)
_C.SOLVER.CENTER_LR = 0.5  # learning rate of the center-loss centers (own SGD)
_C.SOLVER.CENTER_LOSS_WEIGHT = 0.0005  # weight of center loss
_C.SOLVER.RANGE_K = 2  # upstream's range loss (kept for file compatibility)
_C.SOLVER.RANGE_MARGIN = 0.3  # upstream's range loss (kept for file compatibility)
_C.SOLVER.RANGE_ALPHA = 0  # upstream's range loss (kept for file compatibility)
_C.SOLVER.RANGE_BETA = 1  # upstream's range loss (kept for file compatibility)
_C.SOLVER.RANGE_LOSS_WEIGHT = 1  # upstream's range loss (kept for file compatibility)
_C.SOLVER.WEIGHT_DECAY = 0.0005  # weight decay of weights
_C.SOLVER.WEIGHT_DECAY_BIAS = 0.0  # weight decay of biases
_C.SOLVER.GAMMA = 0.1  # learning-rate factor at each of STEPS
_C.SOLVER.STEPS = (30, 55)  # epochs at which the learning rate is multiplied by GAMMA
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3  # learning-rate factor at step 0, rising to 1 over WARMUP_ITERS
# warmup length, in epochs: as upstream, the scheduler steps when each epoch starts (epoch e trains at step e)
_C.SOLVER.WARMUP_ITERS = 500
_C.SOLVER.WARMUP_METHOD = "linear"  # 'linear' or 'constant'
_C.SOLVER.CHECKPOINT_PERIOD = 50  # save a checkpoint every N epochs (and always at the end); each is kept
_C.SOLVER.LOG_PERIOD = 100  # log every N iterations
_C.SOLVER.EVAL_PERIOD = 50  # evaluate every N epochs (and always at the last epoch)
_C.SOLVER.IMS_PER_BATCH = 64  # training batch size (P x K with the PK sampler)
_C.SOLVER.AMP = "no"  # ours: mixed precision on CUDA: 'no', 'bf16' or 'fp16' (with a gradient scaler); CPU ignores it
_C.SOLVER.COMPILE = "no"  # ours: 'yes' trains through torch.compile on CUDA (a minute of compiling, fewer kernel launches)

# ---------------------------------------------------------------------------------------------------
# TEST
# ---------------------------------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.IMS_PER_BATCH = 128  # test batch size
_C.TEST.RE_RANKING = "no"  # k-reciprocal re-ranking: 'yes' or 'no'
_C.TEST.WEIGHT = ""  # trained weights to test
_C.TEST.NECK_FEAT = "after"  # test feature: 'before' or 'after' the BNNeck
_C.TEST.FEAT_NORM = "yes"  # L2-normalise test features: 'yes' or 'no'
# ours: evaluate the checkpoint saved after this epoch (checkpoint_epoch<N>.pth, kept beside TEST.WEIGHT every
# SOLVER.CHECKPOINT_PERIOD epochs and at the end) instead of TEST.WEIGHT itself; 0: TEST.WEIGHT
_C.TEST.CHECKPOINT_EPOCH = 0
_C.TEST.EVAL_BEFORE_TRAINING = "no"  # ours: also evaluate the untrained model ('yes' shows what training bought)
# ours: evaluate test/* (query/gallery) once at the end; an evaluation sweep's trials set 'no' (they select on
# val/*, and finalize tests the chosen setting once), which spares each the test split's distances
_C.TEST.EVAL_TEST_SET = "yes"
_C.TEST.RERANK_K1 = 20  # ours: re-ranking k1
_C.TEST.RERANK_K2 = 6  # ours: re-ranking k2
_C.TEST.RERANK_LAMBDA = 0.3  # ours: re-ranking lambda
_C.TEST.RERANK_MEMORY_MB = 256  # ours: re-ranking's working memory (sizes its chunks), beyond its query x gallery result

# ---------------------------------------------------------------------------------------------------
# W&B, as forks of reid-strong-baseline use it (only when the trial notebook runs alone)
# ---------------------------------------------------------------------------------------------------
_C.WANDB = CN()
_C.WANDB.ENABLE = False  # log a standalone training run to W&B (the sweep driver owns runs when it drives)
_C.WANDB.PROJECT = ""  # W&B project; '' = $WANDB_PROJECT, else DEFAULT_WANDB_PROJECT (as sweeps)
_C.WANDB.ENTITY = ""  # W&B entity (team or user); '' = the default entity
_C.WANDB.NAME = ""  # run name; '' = W&B's generated name
_C.WANDB.TAGS = ()  # run tags

# ---------------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------------
_C.SEED = 0  # seeds python, numpy and torch
_C.DETERMINISTIC = False  # torch deterministic algorithms (slower on GPU)
_C.OUTPUT_DIR = ""  # checkpoints and the trial's files; a standalone run makes its own run-<date>_<time>-<id>/ in it
