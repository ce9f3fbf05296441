"""Published retrieval figures to compare ours with: open_clip's retrieval results table.

Source: open_clip `docs/openclip_retrieval_results.csv` (made with CLIP_benchmark). COCO is the
Karpathy 5k test split with all 25,010 captions; Flickr30k the Karpathy 1k test split. IR is
text -> image (`image_retrieval_recall@K`), TR image -> text (`text_retrieval_recall@K`).
"""

from __future__ import annotations

SOURCE = "open_clip docs/openclip_retrieval_results.csv (CLIP_benchmark)"
COCO_5K = "coco-5k"
FLICKR30K_1K = "flickr30k-1k"
BENCHMARK_TITLES = {
    COCO_5K: "COCO 5k test (Karpathy split, 25,010 captions)",
    FLICKR30K_1K: "Flickr30k 1k test (Karpathy split)",
}

# (model, pretrained) -> benchmark -> (IR@1, IR@5, IR@10, TR@1, TR@5, TR@10)
_TABLE: dict[tuple[str, str], dict[str, tuple[float, ...]]] = {
    ("ViT-B-32", "openai"): {
        COCO_5K: (0.3044, 0.5594, 0.6687, 0.5012, 0.7500, 0.8352),
        FLICKR30K_1K: (0.5878, 0.8356, 0.9002, 0.7890, 0.9490, 0.9820),
    },
    ("ViT-B-16", "openai"): {
        COCO_5K: (0.3309, 0.5842, 0.6899, 0.5242, 0.7670, 0.8462),
        FLICKR30K_1K: (0.6216, 0.8572, 0.9192, 0.8220, 0.9660, 0.9900),
    },
    ("ViT-L-14", "openai"): {
        COCO_5K: (0.3651, 0.6106, 0.7113, 0.5634, 0.7938, 0.8660),
        FLICKR30K_1K: (0.6496, 0.8724, 0.9204, 0.8520, 0.9740, 0.9920),
    },
    ("ViT-B-32", "laion2b_s34b_b79k"): {
        COCO_5K: (0.3934, 0.6543, 0.7561, 0.5632, 0.7984, 0.8712),
        FLICKR30K_1K: (0.6678, 0.8838, 0.9310, 0.8410, 0.9620, 0.9830),
    },
    ("ViT-L-14", "laion2b_s32b_b82k"): {
        COCO_5K: (0.4651, 0.7108, 0.7980, 0.6336, 0.8398, 0.9074),
        FLICKR30K_1K: (0.7552, 0.9286, 0.9594, 0.8950, 0.9870, 0.9940),
    },
    ("ViT-H-14", "laion2b_s32b_b79k"): {
        COCO_5K: (0.4948, 0.7338, 0.8151, 0.6592, 0.8606, 0.9188),
        FLICKR30K_1K: (0.7764, 0.9418, 0.9660, 0.9070, 0.9920, 0.9970),
    },
    ("ViT-B-32-256", "datacomp_s34b_b86k"): {
        COCO_5K: (0.3993, 0.6543, 0.7524, 0.5792, 0.8056, 0.8810),
        FLICKR30K_1K: (0.6492, 0.8722, 0.9216, 0.8480, 0.9670, 0.9850),
    },
    ("ViT-B-16", "laion2b_s34b_b88k"): {
        COCO_5K: (0.4231, 0.6770, 0.7706, 0.5944, 0.8178, 0.8862),
        FLICKR30K_1K: (0.6984, 0.9038, 0.9456, 0.8630, 0.9790, 0.9940),
    },
    ("ViT-B-16-SigLIP", "webli"): {
        COCO_5K: (0.4778, 0.7244, 0.8100, 0.6574, 0.8542, 0.9126),
        FLICKR30K_1K: (0.7468, 0.9230, 0.9562, 0.8910, 0.9800, 0.9930),
    },
    ("ViT-B-16-SigLIP-256", "webli"): {
        COCO_5K: (0.4834, 0.7254, 0.8099, 0.6614, 0.8634, 0.9182),
        FLICKR30K_1K: (0.7504, 0.9242, 0.9626, 0.9040, 0.9830, 0.9930),
    },
    ("ViT-B-16-SigLIP-512", "webli"): {
        COCO_5K: (0.5055, 0.7421, 0.8217, 0.6872, 0.8786, 0.9266),
        FLICKR30K_1K: (0.7906, 0.9458, 0.9690, 0.9250, 0.9920, 0.9960),
    },
    ("ViT-SO400M-14-SigLIP-384", "webli"): {
        COCO_5K: (0.5421, 0.7678, 0.8424, 0.7242, 0.8998, 0.9448),
        FLICKR30K_1K: (0.8296, 0.9610, 0.9804, 0.9430, 0.9970, 0.9980),
    },
    ("ViT-B-16-SigLIP-i18n-256", "webli"): {
        COCO_5K: (0.4492, 0.6948, 0.7837, 0.6448, 0.8434, 0.9060),
        FLICKR30K_1K: (0.7216, 0.9036, 0.9470, 0.8960, 0.9820, 0.9910),
    },
    ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"): {
        COCO_5K: (0.3778, 0.6344, 0.7348, 0.5354, 0.7798, 0.8640),
        FLICKR30K_1K: (0.6448, 0.8628, 0.9168, 0.8270, 0.9640, 0.9780),
    },
}
_KEYS = tuple(
    f"{direction}_retrieval_recall@{k}" for direction in ("image", "text") for k in (1, 5, 10)
)


def benchmark_key(name: str, split: str, split_source: str) -> str | None:
    """The published benchmark a dataset matches, or None: only the splits the table used."""
    if split != "test" or split_source != "karpathy":
        return None
    return {"coco": COCO_5K, "flickr30k": FLICKR30K_1K}.get(name)


def published_metrics(model: str, pretrained: str, benchmark: str | None) -> dict[str, float]:
    """Published Recall@1/5/10 of both directions, or {} where the table has none."""
    if benchmark is None:
        return {}
    row = _TABLE.get((model, pretrained.lower()), {}).get(benchmark)
    return dict(zip(_KEYS, row, strict=True)) if row else {}
