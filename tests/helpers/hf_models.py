"""Models whose tokenizer is a Hugging Face one, built offline: a small real tokenizer trained
here with the `tokenizers` library (English and Chinese), saved as transformers saves one, in a
`local-dir:` model folder as open_clip reads it (config, preprocessing, weights, tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = (
    "a cat on a couch",
    "a dog running in the snow",
    "a cup of coffee on a wooden table",
    "an astronaut floating in space",
    "a rocket on its launch pad",
    "一只猫坐在沙发上",
    "雪地里奔跑的狗",
    "木桌上的一杯咖啡",
    "太空中漂浮的宇航员",
    "发射台上的火箭",
)


def save_tokenizer(folder: Path) -> None:
    """A SentencePiece-style (Unigram, Metaspace) tokenizer, as SigLIP's is."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tokenizer.train_from_iterator(list(CORPUS) * 10, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    wrapped.save_pretrained(folder)


def siglip_preprocess() -> dict[str, Any]:
    """SigLIP's preprocessing as open_clip publishes it for its webli weights (squash resize,
    mean and std 0.5): read from open_clip, never written down here."""
    import open_clip

    published = open_clip.get_pretrained_cfg("ViT-B-16-SigLIP", "webli")
    keys = ("mean", "std", "interpolation", "resize_mode")
    return {k: published[k] for k in keys if k in published}


TINY_SIGLIP = {
    "embed_dim": 64,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {
        "image_size": 224,
        "timm_model_name": "vit_tiny_patch16_224",
        "timm_model_pretrained": False,
        "timm_pool": "avg",
        "timm_proj": "linear",
    },
    "text_cfg": {
        "context_length": 16,
        "vocab_size": 512,
        "hf_tokenizer_name": "local",  # a local-dir model reads the tokenizer in its folder
        "tokenizer_kwargs": {"clean": "canonicalize"},
        "width": 64,
        "heads": 2,
        "layers": 2,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
    },
}


def siglip_model_dir(root: Path, config: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """A `local-dir:` SigLIP-family model: the config (the tiny one by default), SigLIP's
    preprocessing, seeded random weights and the local tokenizer."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = root / "siglip-model"
    folder.mkdir(parents=True)
    save_tokenizer(folder)
    model_cfg = config or TINY_SIGLIP
    document = {"model_cfg": model_cfg, "preprocess_cfg": siglip_preprocess()}
    (folder / "open_clip_config.json").write_text(json.dumps(document))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def hf_text_tower_model_dir(root: Path, seed: int = 0) -> Path:
    """A `local-dir:` model whose text tower is a Hugging Face transformer, as
    xlm-roberta-base-ViT-B-32's is: a small XLM-RoBERTa config beside the local tokenizer
    (open_clip reads both from the folder), a tiny CLIP vision tower, seeded random weights."""
    import open_clip
    import torch
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig

    folder = root / "hf-text-model"
    folder.mkdir(parents=True)
    save_tokenizer(folder)
    XLMRobertaConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=40,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    ).save_pretrained(folder)
    model_cfg = {
        "embed_dim": 64,
        "vision_cfg": {
            "image_size": 224,
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 32,
        },
        "text_cfg": {
            "hf_model_name": str(folder),
            "hf_tokenizer_name": str(folder),
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "linear",
            "context_length": 32,
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(
            f"local-dir:{folder}", load_weights=False, pretrained_text=False
        )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder
