"""Every default and limit of searchmm, once: the CLI, the server and the library read them here."""

from __future__ import annotations

INDEX_DIR_ENV = "SEARCHMM_INDEX_DIR"
INDEX_DIR = "indexes"
# What a machine keeps across stores: ONNX exports by model, checkpoint digests.
CACHE_DIR_ENV = "SEARCHMM_CACHE_DIR"

MODEL = "ViT-B-32"
PRETRAINED = "laion2b_s34b_b79k"

BATCH_SIZE = 32  # images per encoder batch
TEXT_BATCH_SIZE = 256  # texts per encoder batch (and per commit)
# Below this many images to encode, an ingest on the CPU encodes with the model's ONNX export
# (it starts 2.7 s sooner than torch and encodes 10% slower: even at about 500 images, measured
# in bench/results/ingest_efficiency.md); above it, with torch.
ONNX_INGEST_IMAGES = 500
K = 10  # results per query

# Below this many vectors an exact IndexFlatIP is used; above it an ANN index.
EXACT_THRESHOLD = 100_000
# Below this many allowed items, ranking them exactly from their stored vectors is cheaper
# than an index search with a selector, and always exact.
EXACT_FILTER_LIMIT = 20_000

EXPORT_SHARD_SIZE = 1_000_000  # rows per .npy/.parquet shard of `searchmm export`
IMPORT_BATCH_ROWS = 5_000  # rows per commit of `searchmm import`

DUPES_THRESHOLD = 0.95  # cosine similarity at which two images count as near-duplicates

THUMBNAIL_SIZE = 256  # longer side of the web page's thumbnails, pixels
MAX_UPLOAD_BYTES = 20_000_000  # largest query image the server accepts
MAX_K = 1000  # largest page the server returns
MAX_OFFSET = 10_000  # deepest page the server returns

# `searchmm finetune`: a few hundred to a few thousand pairs, starting from trained weights.
FINETUNE_EPOCHS = 10
FINETUNE_BATCH_SIZE = 64  # pairs per step: every other pair of a batch is a negative
FINETUNE_LR = 1e-5  # AdamW's peak rate: small, so trained weights are adjusted, not overwritten
FINETUNE_WEIGHT_DECAY = 0.1
FINETUNE_WARMUP_FRACTION = 0.1  # of all steps, when --warmup-steps is not given
FINETUNE_VAL_SPLIT = 0.1  # fraction of the images held out (with all their captions)
FINETUNE_GRAD_CLIP = 1.0  # largest gradient norm, as open_clip's training clips it
FINETUNE_IMAGE_FIELD = "image"  # the image path field (.jsonl) or column (.csv)
