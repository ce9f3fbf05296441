"""Images decoded and encoded on a Ray cluster (`ingest --executor ray`), with Ray Data.

    files to encode (as the store's plan decided) -> decode + preprocess: Ray tasks
        -> encode: an actor pool, one model per actor (a GPU each where the cluster has them)
        -> batches streamed back to this process, which commits each as a local ingest does

Only where pixels and vectors are computed changes: the plan, the commits, the crash
guarantees and the reports are the local ingest's. The paths must be readable by the workers
under the same names (a shared filesystem); a worker that cannot read one reports it as that
file's failure, as a local decode does. Ray retries the tasks of a lost node and restarts a
lost actor (Ray Data's defaults), and a file it computes twice is committed once.

Tasks ask for half a CPU and actors for a quarter: a node then holds an encoder beside its
decoders, which keeps an ingest going when a small cluster loses all its nodes but one (with a
whole CPU each, a restarted actor and the decode tasks would wait for each other); and as the
two differ, Ray Data keeps decoding in tasks of its own instead of fusing it into the actors.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from searchmm.errors import SearchmmError
from searchmm.ingest.encoding import EncodedBatch
from searchmm.ingest.run import IngestRun
from searchmm.model.encoder import Encoder
from searchmm.model.pixels import PixelRecipe
from searchmm.model.spec import ModelSpec
from searchmm.sources.files import FILE_VANISHED, NOT_ON_WORKER
from searchmm.sources.loader import Decoded, ImageDecoder, Preprocess
from searchmm.sources.scan import FileEntry

TASK_CPUS = 0.5
ACTOR_CPUS = 0.25
BLOCK_BATCHES = 4  # encoder batches per Ray block: blocks stream back as they are done
INSTALL = "pip install 'searchmm[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` as `ray.init` takes it (None: $RAY_ADDRESS, else a
    cluster running on this machine, else a new local one); `actors` encoders (None: one per
    GPU of the cluster, else one)."""

    address: str | None = None
    actors: int | None = None

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise SearchmmError(f"need at least one encoder actor, got {self.actors}")


def ray_batches(
    run: IngestRun, encoder: Encoder, entries: Sequence[FileEntry], draft: int | None
) -> Generator[EncodedBatch, None, None]:
    """The files' vectors as the cluster's actors finish them, in no particular order."""
    import pyarrow as pa

    options = run.options
    assert options.ray is not None, "chosen by encoding.encoded_batches"
    rows = pa.table(
        {
            "index": np.arange(len(entries), dtype=np.int64),
            "path": [e.path for e in entries],
            "size": np.asarray([e.size for e in entries], dtype=np.int64),
            "mtime_ns": np.asarray([e.mtime_ns for e in entries], dtype=np.int64),
        }
    )
    block = options.batch_size * BLOCK_BATCHES
    transit = Transit.of(encoder)
    decode = {"transit": transit, "draft": draft, "exact": options.exact_decode}
    with connected(options.ray.address) as ray:
        decoded = ray.data.from_arrow(
            [rows.slice(start, block) for start in range(0, len(entries), block)]
        ).map_batches(
            decode_files, fn_kwargs=decode, batch_size=options.batch_size, num_cpus=TASK_CPUS
        )
        found = on_actors(ray, decoded, encoder.spec, transit, options.ray, options.batch_size)
        for batch in found.iter_batches(batch_size=None, batch_format="numpy"):
            yield seen_from_here(encoded(batch), entries)


@dataclass(frozen=True)
class Transit:
    """How pixels cross the object store: where the model's preprocess is a plain recipe, as
    the resized and cropped bytes (a quarter of float32's), normalised by the encoder; else
    as the float32 pixels the transform makes."""

    preprocess: Preprocess
    shape: tuple[int, int, int]
    dtype: type[np.generic]
    recipe: PixelRecipe | None

    @classmethod
    def of(cls, encoder: Encoder) -> Transit:
        size, recipe = encoder.image_size, encoder.pixel_recipe()
        if recipe is None:
            return cls(encoder.pixel_transform(), (3, size, size), np.float32, None)
        return cls(recipe.crop, (size, size, 3), np.uint8, recipe)

    def finished(self, pixels: np.ndarray) -> np.ndarray:
        """What crossed -> the (n, 3, H, W) float32 pixels the encoder takes."""
        return pixels if self.recipe is None else self.recipe.normalise(pixels)


def on_actors(
    ray: Any, decoded: Any, spec: ModelSpec, transit: Transit, options: RayOptions, batch: int
) -> Any:
    """`decoded` (a Ray Dataset) encoded by a pool of `EncoderActor`s: as many as asked, else
    one per GPU, else one (torch spreads a CPU encoder over its node's cores)."""
    gpu, count = encoders(ray, options)
    return decoded.map_batches(
        EncoderActor,
        fn_constructor_kwargs={"spec": spec, "gpu": gpu, "transit": transit},
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=count),
        num_cpus=ACTOR_CPUS,
        num_gpus=1 if gpu else None,
    )


def encoders(ray: Any, options: RayOptions) -> tuple[bool, int]:
    """Whether encoders get a GPU each (the cluster has GPUs), and how many there are."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return gpus > 0, options.actors or gpus or 1


def seen_from_here(batch: EncodedBatch, entries: Sequence[FileEntry]) -> EncodedBatch:
    """A file that vanished for a worker but is still here is not on a filesystem it shares."""
    batch.failures = [
        (i, NOT_ON_WORKER if why == FILE_VANISHED and os.path.lexists(entries[i].path) else why)
        for i, why in batch.failures
    ]
    return batch


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[Any]:
    """The `ray` module, connected to the cluster; a connection made here is ended here (one
    the caller made is the caller's)."""
    try:
        import ray
    except ImportError as exc:
        raise SearchmmError(f"the Ray executor needs Ray: {INSTALL}") from exc
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves unasked
    try:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SearchmmError(f"cannot reach the Ray cluster at {address or 'auto'}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def decode_files(
    batch: dict[str, np.ndarray], transit: Transit, draft: int | None, exact: bool
) -> dict[str, np.ndarray]:
    """A Ray task: the batch's files decoded and preprocessed as a local ingest does; a file
    that fails gets zero pixels and its reason (Ray Data columns are whole arrays)."""
    started = time.perf_counter()
    paths = [str(p) for p in batch["path"]]
    expected = list(zip(batch["size"].tolist(), batch["mtime_ns"].tolist(), strict=True))
    decoder = ImageDecoder(paths, transit.preprocess, draft, expected, exact)
    columns = decoded_columns([decoder[row] for row in range(len(paths))], transit)
    seconds = (time.perf_counter() - started) / max(1, len(paths))
    return {"index": batch["index"], **columns, "decode_s": np.full(len(paths), seconds)}


def decoded_columns(items: Sequence[Decoded], transit: Transit) -> dict[str, np.ndarray]:
    """Decoded items as Ray Data columns (whole arrays): a row without pixels gets zeros, and
    its reason in `error` ("" where there is none)."""
    pixels = np.zeros((len(items), *transit.shape), dtype=transit.dtype)
    sizes = np.zeros((len(items), 2), dtype=np.int64)
    for row, item in enumerate(items):
        if item["pixels"] is not None and item["size"] is not None:
            pixels[row], sizes[row] = item["pixels"], item["size"]
    errors = np.asarray([item["error"] or "" for item in items], dtype=object)
    return {"pixels": pixels, "size": sizes, "error": errors}


class EncoderActor:
    """One model on one worker (its GPU if it has one), loaded once, encoding batch after batch:
    the images of rows that decoded (and are wanted), the texts of rows whose `need_text` says
    so. Pixels stay on the worker; the other columns pass through, with the vectors."""

    def __init__(self, spec: ModelSpec, gpu: bool, transit: Transit | None = None) -> None:
        from searchmm.model.loading import load_encoder

        if not gpu:  # Ray gives a worker one thread for its CPU share; an encoder has the node's
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        self.encoder = load_encoder(spec, "cuda" if gpu else "cpu")
        self.transit = transit

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        rows, dim = len(batch["decode_s"]), self.encoder.dim
        out = {name: column for name, column in batch.items() if name != "pixels"}
        if "pixels" in batch:
            good = np.asarray([not e for e in batch["error"]], dtype=bool)
            good &= np.asarray(batch.get("need_image", good), dtype=bool)
            out["vector"] = np.zeros((rows, dim), dtype=np.float32)
            if good.any():
                assert self.transit is not None, "an image dataset's pool is given one"
                pixels = self.transit.finished(batch["pixels"][good])
                out["vector"][good] = self.encoder.encode_images(pixels)
        if "text" in batch:
            wanted = np.flatnonzero(np.asarray(batch["need_text"], dtype=bool))
            out["text_vector"] = np.zeros((rows, dim), dtype=np.float32)
            if len(wanted):
                texts = [str(batch["text"][row]) for row in wanted]
                out["text_vector"][wanted] = self.encoder.encode_texts(texts)
        out["encode_s"] = np.full(rows, (time.perf_counter() - started) / max(1, rows))
        return out

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_texts(texts)


class RayTexts:
    """The texts of a file ingest encoded by actors on the cluster, batches in the order asked
    (as many in flight as there are actors). The actors start with the first texts to encode
    and end with the ingest; Ray restarts a lost one and retries its batch."""

    def __init__(self, run: IngestRun) -> None:
        assert run.options.ray is not None, "chosen by encoding.text_encoding"
        self.run, self.options = run, run.options.ray
        self._connection = contextlib.ExitStack()
        self._actors: list[Any] = []
        self._pool: Any = None

    def vectors(self, batches: Sequence[list[str]]) -> Iterator[np.ndarray]:
        pool = self._pool or self._start()
        return iter(pool.map(lambda actor, texts: actor.encode_texts.remote(texts), batches))

    def _start(self) -> Any:
        from ray.util import ActorPool

        ray = self._connection.enter_context(connected(self.options.address))
        gpu, count = encoders(ray, self.options)
        actor = ray.remote(
            num_cpus=ACTOR_CPUS, num_gpus=1 if gpu else 0, max_restarts=-1, max_task_retries=-1
        )(EncoderActor)
        spec = self.run.load_encoder().spec
        self._actors = [actor.remote(spec, gpu) for _ in range(count)]
        self._pool = ActorPool(self._actors)
        return self._pool

    def close(self) -> None:
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
        self._connection.close()


def encoded(batch: dict[str, np.ndarray]) -> EncodedBatch:
    good = [row for row, error in enumerate(batch["error"]) if not error]
    indices = batch["index"].tolist()
    return EncodedBatch(
        [indices[row] for row in good],
        np.ascontiguousarray(batch["vector"][good], dtype=np.float32) if good else None,
        [(int(w), int(h)) for w, h in batch["size"][good]],
        [(indices[row], str(e)) for row, e in enumerate(batch["error"]) if e],
        float(batch["decode_s"].sum()),
        float(batch["encode_s"].sum()),
    )
