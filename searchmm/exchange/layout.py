"""The folder layout clip-retrieval writes and autofaiss reads, with split metadata per kind:

OUT/img_emb/img_emb_0.npy           float16 or float32 rows, L2-normalised
OUT/img_metadata/metadata_0.parquet same row order: id, image_path, width, height, ...
OUT/text_emb/text_emb_0.npy
OUT/text_metadata/metadata_0.parquet id, caption, source, locator, ...
OUT/model.json                      the model that made the vectors; written last
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from searchmm.vocabulary import Kind

MODEL_FILE = "model.json"
FORMAT = 1
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class KindLayout:
    embeddings: str  # folder of the .npy shards
    prefix: str  # shard file name before its number
    metadata: str  # folder of the .parquet shards

    def embedding_file(self, root: Path, shard: int) -> Path:
        return root / self.embeddings / f"{self.prefix}_{shard}.npy"

    def metadata_file(self, root: Path, shard: int) -> Path:
        return root / self.metadata / f"metadata_{shard}.parquet"


LAYOUT = {
    Kind.IMAGE: KindLayout("img_emb", "img_emb", "img_metadata"),
    Kind.TEXT: KindLayout("text_emb", "text_emb", "text_metadata"),
}
