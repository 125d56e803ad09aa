"""The JSON state client (``client.state``): stores Neuroglancer states and segment-property
documents on the state service and builds the Neuroglancer links that open them.

Signatures, defaults, results and errors are caveclient 8.2.1's ``JSONService``.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from typing import Any, Literal

import numpy as np
import requests

from ..wire.endpoints import NGLSTATE
from .auth import AuthClient
from .base import ServiceClient, check_version_compatibility, handle_response
from .session import Timeout, build_session

# A Neuroglancer deployment's build description; deployments without one are "seunglab" builds.
NGL_INFO_TEMPLATE = "{ngl_url}/version.json"
FALLBACK_NGL_URL = "https://neuroglancer.neuvue.io/"
SEUNGLAB_NAMES = ["seunglab"]
SPELUNKER_NAMES = ["spelunker", "mainline", "cave-explorer"]
_ID_IN_ANSWER = re.compile(r".*\/(\d+)")


def neuroglancer_json_encoder(obj: Any) -> Any:
    """``json.dumps`` ``default=`` hook for states: numpy integers become strings (Neuroglancer
    writes segment ids as strings, and 64-bit ids do not survive JavaScript numbers), numpy
    floats floats, arrays and sets lists. Plain Python ints never reach the hook and stay numbers.
    """
    if isinstance(obj, (numbers.Integral, np.integer)):
        return str(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return list(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable in a Neuroglancer state")


def _id_from_answer(response: requests.Response) -> int:
    """The id in an upload answer: the last ``/<digits>`` of its text (a URL ending in the id)."""
    match = _ID_IN_ANSWER.search(str(response.content))
    if match is None:
        raise ValueError(f"The state service answered without an id: {response.content[:200]!r}")
    return int(match.groups()[0])


class JSONService(ServiceClient):
    """Client of the JSON state service (``client.state``), on the global server; API v1.

    Parameters
    ----------
    server_address
        The global server (default ``https://global.daf-apis.com``).
    auth_client
        An ``AuthClient`` with a token for that server (default: the saved token).
    api_version
        1, 0 (the legacy ``/nglstate`` paths, without segment properties) or ``"latest"`` (1).
    ngl_url
        Default Neuroglancer deployment for ``build_neuroglancer_url``; a datastack's client
        sets it to the datastack's ``viewer_site``.
    max_retries, pool_maxsize, pool_block, over_client, verify, timeout
        As for the other sub-clients.
    """

    service = NGLSTATE

    def __init__(
        self,
        server_address: str | None = None,
        auth_client: AuthClient | None = None,
        api_version: int | str = "latest",
        ngl_url: str | None = None,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        over_client: Any = None,
        verify: bool | str = True,
        timeout: Timeout | None = None,
    ):
        super().__init__(
            server_address,
            auth_client,
            api_version,
            verify=verify,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            over_client=over_client,
            timeout=timeout,
        )
        self._ngl_url = ngl_url
        # For Neuroglancer deployments: same retries and timeout, but no CAVE token or cookie.
        self._public_session = build_session(
            max_retries=max_retries, pool_block=pool_block, pool_maxsize=pool_maxsize, timeout=timeout, verify=verify
        )

    @property
    def state_service_endpoint(self) -> str:
        """The URL states are posted to."""
        return self._url("upload_state")

    @property
    def ngl_url(self) -> str | None:
        """The default Neuroglancer deployment (None: ``build_neuroglancer_url`` falls back to
        ``https://neuroglancer.neuvue.io/``)."""
        return self._ngl_url

    @ngl_url.setter
    def ngl_url(self, new_ngl_url: str | None) -> None:
        self._ngl_url = new_ngl_url

    def get_neuroglancer_info(self, ngl_url: str | None = None) -> dict:
        """The ``version.json`` of a Neuroglancer deployment (default: ``ngl_url``); ``{}`` if it
        has none (404). Other HTTP errors raise ``requests.HTTPError``.

        Unlike caveclient, the request carries no CAVE token: a Neuroglancer deployment is a
        static site, often on another host, which has no business receiving it.
        """
        if ngl_url is None:
            ngl_url = self.ngl_url
        if ngl_url is None:
            raise ValueError("No Neuroglancer URL: pass ngl_url or set client.state.ngl_url.")
        url = NGL_INFO_TEMPLATE.format_map({"ngl_url": ngl_url})
        response = self._public_session.get(url)
        if response.status_code == 404:
            return {}
        handle_response(response, as_json=False)
        return json.loads(response.content)

    def get_state_json(self, state_id: int | str) -> dict:
        """The Neuroglancer state with id ``state_id``.

        A ``state_id`` that is not an integer is taken as the full URL of a JSON state (on any
        server; the request carries this client's token, as the state server needs it).
        """
        try:
            url = self._url("get_state", state_id=int(state_id))
        except ValueError:
            url = state_id
        response = self.session.get(url)
        handle_response(response, as_json=False)
        return json.loads(response.content)

    @check_version_compatibility(method_constraint=">=0.4.0")
    def get_property_json(self, state_id: int) -> dict:
        """The segment-properties document with id ``state_id``."""
        response = self.session.get(self._url("get_properties", state_id=state_id))
        handle_response(response, as_json=False)
        return json.loads(response.content)

    def upload_state_json(self, json_state: dict, state_id: int | None = None, timestamp: Any = None) -> int:
        """Store a Neuroglancer state and return its id.

        ``state_id`` stores it under that id (administrators only; fails if the id exists).
        ``timestamp`` is accepted for caveclient compatibility and, as there, not sent.
        """
        if state_id is None:
            url = self._url("upload_state")
        else:
            url = self._url("upload_state_w_id", state_id=state_id)
        response = self.session.post(url, data=json.dumps(json_state, default=neuroglancer_json_encoder))
        handle_response(response, as_json=False)
        return _id_from_answer(response)

    @check_version_compatibility(">=0.4.0")
    def upload_property_json(
        self, property_json: dict, state_id: int | None = None, max_size: int | None = 2_500_000
    ) -> int:
        """Store a segment-properties document and return its id.

        ``max_size`` (bytes of the encoded JSON; None: no limit) is checked before sending, with
        a ``ValueError`` if exceeded. ``state_id`` stores it under that id (administrators only).
        """
        if state_id is None:
            url = self._url("upload_properties")
        else:
            url = self._url("upload_properties_w_id", state_id=state_id)
        data = json.dumps(property_json, default=neuroglancer_json_encoder)
        data_size = len(data.encode("utf-8"))
        if max_size is not None and data_size > max_size:
            raise ValueError(
                f"Data size {data_size} exceeds maximum size of {max_size} bytes. "
                "Please reduce the size of the data or increase the `max_size` "
                "if your state server can handle larger inputs."
            )
        response = self.session.post(url, data=data)
        handle_response(response, as_json=False)
        return _id_from_answer(response)

    def save_state_json_local(self, json_state: dict, filename: str, overwrite: bool = False) -> None:
        """Write a state to a local JSON file, encoded as uploads are; ``ValueError`` if the file
        exists and ``overwrite`` is False."""
        if os.path.exists(filename) and not overwrite:
            raise ValueError("File exists and overwrite is False")
        with open(filename, "w") as f:
            json.dump(json_state, f, default=neuroglancer_json_encoder)

    def build_neuroglancer_url(
        self,
        state_id: int,
        ngl_url: str | None = None,
        target_site: Literal["seunglab", "cave-explorer", "mainline", "spelunker"] | None = None,
        static_url: bool = False,
        format_properties: bool = False,
    ) -> str:
        """A Neuroglancer link that opens the stored state ``state_id``.

        ``ngl_url`` defaults to the client's (the datastack's viewer), then to
        ``https://neuroglancer.neuvue.io/``. ``target_site`` None asks the deployment: one with
        a ``version.json`` is a current ("spelunker") Neuroglancer, which loads
        ``#!middleauth+<state url>``; others load ``?json_url=<state url>``. ``static_url``
        treats ``state_id`` as the URL of a JSON file (no auth prefix). ``format_properties``
        returns the ``precomputed://middleauth+...`` source of the segment-properties document
        ``state_id`` instead.
        """
        if ngl_url is None:
            ngl_url = self.ngl_url if self.ngl_url is not None else FALLBACK_NGL_URL
        if target_site is None:
            target_site = SPELUNKER_NAMES[0] if self.get_neuroglancer_info(ngl_url) else SEUNGLAB_NAMES[0]
        slash = "" if ngl_url[-1] == "/" else "/"
        if target_site in SEUNGLAB_NAMES:
            parameter_text, auth_text = slash + "?json_url=", ""
        elif target_site in SPELUNKER_NAMES:
            parameter_text, auth_text = slash + "#!", "middleauth+"
        else:
            raise ValueError("A specified target_site must be one of 'seunglab', 'cave-explorer' or 'mainline'")
        if format_properties:
            properties_url = self._url("get_properties", state_id=state_id)
            return "precomputed://middleauth+" + properties_url.removesuffix("/info")
        if static_url:
            if not isinstance(state_id, str):
                raise TypeError(f"With static_url=True, state_id is the URL of a JSON state (a str), not {state_id!r}.")
            return ngl_url + parameter_text + state_id
        return ngl_url + parameter_text + auth_text + self._url("get_state", state_id=state_id)
