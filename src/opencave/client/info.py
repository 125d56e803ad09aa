"""The info service: datastacks, aligned volumes, their data sources and image mirrors."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..wire.endpoints import DEFAULT_GLOBAL_SERVER, INFO
from .auth import AuthClient
from .base import ClientBaseWithDatastack, check_version_compatibility, handle_response, negotiate_api_version
from .formats import format_path
from .session import Timeout

if TYPE_CHECKING:  # cloud-volume is optional
    import cloudvolume

SERVER_KEY = INFO.server_key
FormatFor = Literal["raw", "cloudvolume", "neuroglancer", "cave_explorer", "cave-explorer", "spelunker"]

_CLOUDVOLUME_HINT = (
    "Could not import cloudvolume. Make sure it is installed. See https://pypi.org/project/cloud-volume for more info."
)


class InfoServiceClient(ClientBaseWithDatastack):
    """Client of the info service (``client.info``).

    Datastack records are cached in ``info_cache`` (``{datastack: record}``) so the many
    properties read from them cost one request per datastack; ``use_stored=False`` refetches.
    Constructing the client fetches the server version and, with a datastack, its record.
    """

    def __init__(
        self,
        server_address: str | None = None,
        datastack_name: str | None = None,
        auth_client: AuthClient | None = None,
        api_version: int | str = "latest",
        verify: bool | str = True,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        over_client: Any = None,
        info_cache: dict[str, dict[str, Any]] | None = None,
        timeout: Timeout | None = None,
    ):
        server_address = server_address or DEFAULT_GLOBAL_SERVER
        auth_client = auth_client if auth_client is not None else AuthClient(server_address=server_address)
        auth_header = auth_client.request_header
        # The info service has no versions endpoint in CAVE: the newest API (v2) is used.
        endpoints, api_version = negotiate_api_version(
            api_version, INFO, server_address, auth_header, verify=verify, probe=False, timeout=timeout
        )
        super().__init__(
            server_address,
            auth_header,
            api_version,
            endpoints,
            SERVER_KEY,
            datastack_name=datastack_name,
            verify=verify,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            over_client=over_client,
            timeout=timeout,
        )
        self.info_cache: dict[str, dict[str, Any]] = info_cache if info_cache else {}
        self._aligned_volume_name: str | None = None
        self._aligned_volume_id: int | None = None
        if datastack_name is not None:
            aligned_volume = self.get_datastack_info(datastack_name=datastack_name)["aligned_volume"]
            self._aligned_volume_name = aligned_volume["name"]
            self._aligned_volume_id = aligned_volume["id"]

    @property
    def aligned_volume_name(self) -> str | None:
        return self._aligned_volume_name

    @property
    def aligned_volume_id(self) -> int | None:
        return self._aligned_volume_id

    def _datastack(self, datastack_name: str | None) -> str:
        name = datastack_name if datastack_name is not None else self.datastack_name
        if name is None:
            raise ValueError("No Dataset set")
        return name

    # -- listings ------------------------------------------------------------------------

    def get_datastacks(self) -> list[str]:
        """Names of the datastacks the info service knows."""
        return handle_response(self.session.get(self._url("datastacks")))

    def get_aligned_volumes(self) -> list[dict[str, Any]]:
        """Every aligned volume."""
        return handle_response(self.session.get(self._url("aligned_volumes")))

    def get_datastacks_by_aligned_volume(self, aligned_volume: str | None = None) -> list[str]:
        """Names of the datastacks on an aligned volume (default: the client's)."""
        aligned_volume = aligned_volume if aligned_volume is not None else self._aligned_volume_name
        if aligned_volume is None:
            raise ValueError("Must specify aligned_volume_id or provide datastack_name in init")
        url = self._url("datastacks_from_aligned_volume", aligned_volume_name=aligned_volume)
        return handle_response(self.session.get(url))

    def get_aligned_volume_info_by_id(
        self, aligned_volume_id: int | None = None, use_stored: bool = True
    ) -> dict[str, Any]:
        """The record of an aligned volume, by id (default: the client's). Never cached."""
        aligned_volume_id = aligned_volume_id if aligned_volume_id is not None else self._aligned_volume_id
        if aligned_volume_id is None:
            raise ValueError("Must specify aligned_volume_id or provide datastack_name in init")
        url = self._url("aligned_volume_by_id", aligned_volume_id=aligned_volume_id)
        return handle_response(self.session.get(url))

    # -- datastack records -----------------------------------------------------------------

    @check_version_compatibility(kwarg_use_constraints={"image_mirror": ">=4.3.1"})
    def get_datastack_info(
        self,
        datastack_name: str | None = None,
        use_stored: bool = True,
        image_mirror: str | None = None,
    ) -> dict[str, Any]:
        """The full info record of a datastack (default: the client's).

        It is fetched when ``use_stored`` is False, when not cached yet, or when an
        ``image_mirror`` is asked for (server >= 4.3.1). The fetched record replaces the cached
        one, mirror or not; ``refresh_stored_data`` restores the default records.
        """
        name = self._datastack(datastack_name)
        if not use_stored or name not in self.info_cache or image_mirror is not None:
            params = {"image_source_name": image_mirror} if image_mirror is not None else None
            response = self.session.get(self._url("datastack_info", datastack_name=name), params=params)
            self.info_cache[name] = handle_response(response)
        return self.info_cache[name]

    def _get_property(
        self,
        info_property: str,
        datastack_name: str | None = None,
        use_stored: bool = True,
        format_for: FormatFor = "raw",
    ) -> Any:
        name = self._datastack(datastack_name)
        self.get_datastack_info(datastack_name=name, use_stored=use_stored)
        value = self.info_cache[name].get(info_property)
        return value if format_for == "raw" else format_path(value, format_for)

    @check_version_compatibility(kwarg_use_constraints={"image_mirror": ">=4.3.1"})
    def get_aligned_volume_info(
        self,
        datastack_name: str | None = None,
        use_stored: bool = True,
        image_mirror: str | None = None,
    ) -> dict[str, Any]:
        """The aligned volume record of a datastack, or that of one of its image mirrors."""
        if image_mirror is None:
            return self._get_property("aligned_volume", datastack_name=datastack_name, use_stored=use_stored)
        for mirror in self.get_image_mirrors(datastack_name=datastack_name):
            if mirror["name"] == image_mirror:
                return mirror
        raise ValueError(f"Image source {image_mirror} not found in aligned volumes")

    def local_server(self, datastack_name: str | None = None, use_stored: bool = True) -> str:
        """The local server of a datastack (materialization, chunkedgraph, ...)."""
        return self._get_property("local_server", datastack_name=datastack_name, use_stored=use_stored)

    def annotation_endpoint(self, datastack_name: str | None = None, use_stored: bool = True) -> str:
        """The annotation engine's base URL for a datastack."""
        return self.local_server(datastack_name=datastack_name, use_stored=use_stored) + "/annotation"

    def image_source(
        self,
        datastack_name: str | None = None,
        use_stored: bool = True,
        format_for: FormatFor = "raw",
        image_mirror: str | None = None,
    ) -> str | None:
        """Cloud path of a datastack's imagery (or of an image mirror), formatted for
        ``format_for`` (see ``opencave.client.formats``)."""
        aligned_volume = self.get_aligned_volume_info(
            datastack_name=datastack_name, use_stored=use_stored, image_mirror=image_mirror
        )
        return format_path(aligned_volume["image_source"], format_for)

    def synapse_segmentation_source(
        self, datastack_name: str | None = None, use_stored: bool = True, format_for: FormatFor = "raw"
    ) -> str | None:
        """Cloud path of the synapse segmentation, formatted for ``format_for``."""
        return self._get_property(
            "synapse_segmentation_source", datastack_name=datastack_name, use_stored=use_stored, format_for=format_for
        )

    def segmentation_source(
        self, datastack_name: str | None = None, use_stored: bool = True, format_for: FormatFor = "raw"
    ) -> str | None:
        """Cloud path of the (graphene) segmentation, formatted for ``format_for``."""
        return self._get_property(
            "segmentation_source", datastack_name=datastack_name, use_stored=use_stored, format_for=format_for
        )

    def viewer_resolution(self, datastack_name: str | None = None, use_stored: bool = True) -> np.ndarray:
        """The viewer's voxel size in nm, as ``np.array([x, y, z])``."""
        return np.array(
            [
                self._get_property(f"viewer_resolution_{axis}", datastack_name=datastack_name, use_stored=use_stored)
                for axis in "xyz"
            ]
        )

    def viewer_site(self, datastack_name: str | None = None, use_stored: bool = True) -> str:
        """The base URL of the datastack's Neuroglancer."""
        return self._get_property("viewer_site", datastack_name=datastack_name, use_stored=use_stored)

    def refresh_stored_data(self) -> None:
        """Refetch every cached datastack record."""
        for name in list(self.info_cache):
            self.get_datastack_info(datastack_name=name, use_stored=False)

    # -- image mirrors ---------------------------------------------------------------------

    @check_version_compatibility(method_constraint=">=4.3.1")
    def get_image_mirrors(self, datastack_name: str | None = None) -> list[dict[str, Any]]:
        """The image sources of a datastack's aligned volume (server >= 4.3.1)."""
        mapping = {"datastack_name": datastack_name} if datastack_name is not None else {}
        return handle_response(self.session.get(self._url("image_sources", **mapping)))

    @check_version_compatibility(method_constraint=">=4.3.1")
    def get_image_mirror_names(self, datastack_name: str | None = None) -> list[str]:
        """Names of a datastack's image mirrors (server >= 4.3.1)."""
        return [mirror["name"] for mirror in self.get_image_mirrors(datastack_name=datastack_name)]

    # -- cloud-volume ----------------------------------------------------------------------

    @check_version_compatibility(kwarg_use_constraints={"image_mirror": ">=4.3.1"})
    def image_cloudvolume(self, image_mirror: str | None = None, **kwargs: Any) -> cloudvolume.CloudVolume:
        """A ``CloudVolume`` of the imagery (needs the optional ``cloud-volume`` package).

        Defaults ``use_https=True``, ``bounded=False``, ``fill_missing=True``; keyword arguments
        override them and are passed on to ``CloudVolume``.
        """
        return self._make_cloudvolume(self.image_source(format_for="cloudvolume", image_mirror=image_mirror), **kwargs)

    def segmentation_cloudvolume(self, use_client_secret: bool = True, **kwargs: Any) -> cloudvolume.CloudVolume:
        """A ``CloudVolume`` of the segmentation (needs the optional ``cloud-volume`` package).

        With ``use_client_secret``, a ``graphene://`` source is opened with this client's
        token. Defaults as for ``image_cloudvolume``.
        """
        return self._make_cloudvolume(
            self.segmentation_source(format_for="cloudvolume"), use_client_secret=use_client_secret, **kwargs
        )

    def _make_cloudvolume(
        self, cloudpath: str | None, use_client_secret: bool = True, **kwargs: Any
    ) -> cloudvolume.CloudVolume:
        try:
            import cloudvolume
        except ImportError as err:
            raise ImportError(_CLOUDVOLUME_HINT) from err
        options: dict[str, Any] = {"use_https": True, "bounded": False, "fill_missing": True, **kwargs}
        secrets = None
        authorization = self.session.headers.get("Authorization")
        if use_client_secret and authorization and re.match(r"^graphene", cloudpath or ""):
            secrets = {"token": str(authorization).split(" ", 1)[1]}
        secrets = options.pop("secrets", secrets)
        return cloudvolume.CloudVolume(cloudpath, secrets=secrets, **options)
