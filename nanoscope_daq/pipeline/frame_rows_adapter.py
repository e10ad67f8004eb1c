"""The Tiled server's reader of a stream's frames: chosen rows of a camera file's dataset.

Loaded by Tiled (``adapters_by_mimetype`` in :func:`nanoscope_daq.pipeline.catalog.catalog_storage`)
for data sources of mimetype ``application/x-hdf5-frame-rows``: the stock HDF5 array adapter,
lazily (dask), restricted to the rows the stream owns.
"""

from __future__ import annotations

import copy

import dask.array
from tiled.adapters.hdf5 import SWMR_DEFAULT, HDF5ArrayAdapter, get_hdf5_attrs
from tiled.utils import path_from_uri

from .catalog import parse_rows


class FrameRowsAdapter(HDF5ArrayAdapter):
    """``dataset`` of a camera file, rows ``rows`` ("start:stop,start:stop", absolute frame indices)."""

    @classmethod
    def from_catalog(cls, data_source, node, /, dataset: str | None = None, rows: str = "",
                     swmr: bool = SWMR_DEFAULT, libver: str = "latest", locking=None,
                     **_: object) -> FrameRowsAdapter:
        (uri,) = {asset.data_uri for asset in data_source.assets}
        path = path_from_uri(uri)
        array = cls.lazy_load_hdf5_array(path, dataset=dataset, swmr=swmr, libver=libver, locking=locking)
        parts = [array[start:stop] for start, stop in parse_rows(rows)] if rows else [array[:0]]
        array = dask.array.concatenate(parts, axis=0)
        structure = data_source.structure
        if array.dtype != structure.data_type.to_numpy_dtype():
            raise ValueError(f"{path}:{dataset} holds {array.dtype}, the catalog says "
                             f"{structure.data_type.to_numpy_dtype()}")
        metadata = copy.deepcopy(node.metadata_)
        metadata.update(get_hdf5_attrs(uri, dataset, swmr=swmr, libver=libver, locking=locking))
        return cls(array, structure, metadata=metadata, specs=node.specs)
