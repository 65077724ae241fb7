"""The distribution HTTP API (OCI distribution-spec) over httpx, for one repository.

Every name and digest is validated before it goes into a URL; reads are bounded and what is
read by digest is verified. Authentication follows the 401 challenge: Basic with Docker's
credentials, or Bearer tokens from the challenge's realm (cached per scope until they
expire). Requests are retried with exponential backoff and jitter on 429, 500, 502, 503, 504
and on timeouts and dropped connections (Retry-After honoured up to 10 s); a body that brings
under STALL_BYTES in a read timeout's time is a timeout too (a trickle never trips the read
timeout itself). Redirects are followed only within the same scheme, host and port, so
credentials never go elsewhere.
One client may be used from many threads; `map` runs a function over items in a bounded
thread pool.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx

from ocicache import __version__
from ocicache.base.errors import (
    CorruptError,
    NotFoundError,
    OcicacheError,
    RefusedError,
    RegistryError,
    TooLargeError,
    UsageError,
)
from ocicache.format.digest import parse_digest
from ocicache.format.mediatypes import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_ARTIFACT_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from ocicache.store.registry.auth import Credentials, config_display, credentials_for
from ocicache.store.registry.target import (
    RegistryTarget,
    is_loopback,
    validate_reference,
    validate_repo,
)

T = TypeVar("T")
R = TypeVar("R")

MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, OCI_ARTIFACT_MANIFEST)
MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES)
MANIFEST_LIMIT = 4 << 20
TAGS_PAGE_LIMIT = 16 << 20  # one tags/list answer
TAGS_LIMIT = 1_000_000  # tags in one repository
ERROR_BODY_LIMIT = 64 << 10  # what is read of an error answer
TOKEN_LIMIT = 1 << 20
CONNECT_TIMEOUT = 10.0
MAX_REDIRECTS = 5
RETRY_AFTER_CAP = 10.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TOKEN_DEFAULT_EXPIRY = 60  # seconds (distribution token spec: expires_in defaults to 60)
# A body that brings fewer bytes than this in a read timeout's time is stalled, and fails as a
# timeout does: a server that trickles a byte at a time never trips the read timeout itself.
STALL_BYTES = 1024
USER_AGENT = f"ocicache/{__version__}"
_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True)
class ManifestResponse:
    """A manifest as the registry served it: its bytes, Content-Type and verified digest."""

    data: bytes
    media_type: str
    digest: str


@dataclass(slots=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    url: httpx.URL


@dataclass(slots=True)
class _Token:
    value: str
    expires: float  # time.monotonic()


@dataclass(slots=True)
class _Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)


class RegistryClient:
    """The distribution API of `target.repo` at `target.host`.

    `credentials` defaults to Docker's for the host (auth.credentials_for), looked up the first
    time the registry asks for them; None means anonymous. `timeout` is the read timeout (connect:
    at most 10 s); `retries` the retries after the first attempt; `workers` the threads of `map`."""

    page_size = 1000  # tags/list ?n=
    backoff = 0.5  # seconds before the first retry; doubled each time, with jitter

    def __init__(
        self,
        target: RegistryTarget,
        *,
        credentials: Credentials | object | None = _DEFAULT,
        timeout: float | None = None,
        retries: int = 4,
        workers: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        validate_repo(target.repo)
        if timeout is None:
            timeout = _env_timeout()
        self.target = target
        self.host = target.host
        self.repo = target.repo
        self.retries = max(0, retries)
        self.workers = max(1, workers)
        self._credentials: Credentials | object | None = credentials
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        self._challenge: _Challenge | None = None
        self._tokens: dict[str, _Token] = {}
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic
        self._window = timeout  # (for _flowing: how long a body may take to bring STALL_BYTES)
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=self.workers * 2, max_keepalive_connections=self.workers),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API ------------------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/, authenticating as the registry asks; RegistryError unless it answers as a
        distribution registry."""
        path = "/v2/"
        answer = self._exchange("GET", path, scope=self._scope("pull"), limit=ERROR_BODY_LIMIT)
        if answer.status != 200:
            raise self._unexpected("GET", path, answer)
        version = answer.headers.get("docker-distribution-api-version", "")
        ctype = _media_type(answer.headers)
        if version.startswith("registry/2") or ctype.endswith("json"):
            return
        body = answer.body.strip()
        if not body or body.startswith(b"{"):
            return
        raise RegistryError(
            f"{self.host} answered GET /v2/ with {ctype or 'a body'} that is not the registry API"
            " (is this a registry?)"
        )

    def tags(self) -> list[str]:
        """Every tag of the repository, following tags/list pagination (Link rel="next", and
        `last` when a full page comes without one). NotFoundError when the repository is unknown."""
        path = f"/v2/{self.repo}/tags/list"
        url: str = f"{path}?{urlencode({'n': self.page_size})}"
        seen_urls: set[str] = set()
        tags: dict[str, None] = {}
        while True:
            seen_urls.add(url)
            answer = self._exchange(
                "GET", url, scope=self._scope("pull"), limit=TAGS_PAGE_LIMIT, limit_name="tags/list limit"
            )
            if answer.status == 404:
                codes = ", ".join(c for c, _ in _errors(answer.body)) or "404"
                raise NotFoundError(f"{self.host} has no repository {self.repo} ({codes})")
            if answer.status != 200:
                raise self._unexpected("GET", path, answer)
            page = self._tags_page(answer, path)
            before = len(tags)
            tags.update(dict.fromkeys(page))
            if len(tags) > TAGS_LIMIT:
                raise TooLargeError(
                    f"{self.host}/{self.repo} has more than {TAGS_LIMIT} tags",
                    limit=TAGS_LIMIT,
                    limit_name="tags limit",
                )
            nxt = self._next_link(answer)
            if nxt is None and page and len(page) == self.page_size:
                nxt = f"{path}?{urlencode({'n': self.page_size, 'last': page[-1]})}"
            if nxt is None or nxt in seen_urls or len(tags) == before:
                return list(tags)
            url = nxt

    def get_manifest(self, reference: str, limit: int = MANIFEST_LIMIT) -> ManifestResponse | None:
        """The manifest `reference` (a tag or a digest) names, or None when the registry has
        none (404). Verified: a digest reference must hash to itself, and Docker-Content-Digest
        when present must match the content."""
        reference = validate_reference(reference)
        path = f"/v2/{self.repo}/manifests/{reference}"
        answer = self._exchange(
            "GET",
            path,
            scope=self._scope("pull"),
            headers={"Accept": MANIFEST_ACCEPT},
            limit=limit,
            limit_name="manifest limit",
        )
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self._unexpected("GET", path, answer)
        data = answer.body
        if data.lstrip()[:1] != b"{":
            ctype = _media_type(answer.headers) or "no Content-Type"
            raise CorruptError(
                f"{self.host} answered GET {path} with {ctype} that is not a JSON manifest",
                where=self._where(reference),
            )
        header = answer.headers.get("docker-content-digest")
        expected = [reference] if ":" in reference else []
        if header:
            expected.append(self._header_digest(header, path))
        digest = self._verify(data, expected, reference)
        media_type = _media_type(answer.headers) or _document_media_type(data)
        return ManifestResponse(data, media_type, digest)

    def head_manifest(self, reference: str) -> tuple[str, str, int] | None:
        """(digest, media type, size) of the manifest `reference` names, or None on 404. Falls
        back to a GET when the registry leaves out Docker-Content-Digest or Content-Length."""
        reference = validate_reference(reference)
        path = f"/v2/{self.repo}/manifests/{reference}"
        answer = self._exchange("HEAD", path, scope=self._scope("pull"), headers={"Accept": MANIFEST_ACCEPT})
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self._unexpected("HEAD", path, answer)
        header = answer.headers.get("docker-content-digest")
        size = _content_length(answer.headers)
        if not header or size is None:
            got = self.get_manifest(reference)
            return None if got is None else (got.digest, got.media_type, len(got.data))
        digest = self._header_digest(header, path)
        if ":" in reference and digest != reference:
            raise CorruptError(
                f"{self.host} answered HEAD {path} with Docker-Content-Digest {digest}",
                where=self._where(reference),
            )
        return digest, _media_type(answer.headers), size

    def get_blob(self, digest: str, limit: int) -> bytes | None:
        """The blob's bytes (at most `limit`, else TooLargeError), verified against `digest`;
        None on 404."""
        digest = str(parse_digest(digest))
        path = f"/v2/{self.repo}/blobs/{digest}"
        answer = self._exchange("GET", path, scope=self._scope("pull"), limit=limit, limit_name="blob limit")
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self._unexpected("GET", path, answer)
        self._verify(answer.body, [digest], digest)
        return answer.body

    def head_blob(self, digest: str) -> int | None:
        """The blob's size, or None when the repository does not have it (404)."""
        digest = str(parse_digest(digest))
        path = f"/v2/{self.repo}/blobs/{digest}"
        answer = self._exchange("HEAD", path, scope=self._scope("pull"))
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self._unexpected("HEAD", path, answer)
        size = _content_length(answer.headers)
        if size is None:
            raise CorruptError(f"{self.host} answered HEAD {path} without a Content-Length")
        return size

    @contextmanager
    def open_blob(self, digest: str) -> Iterator[Iterator[bytes]]:
        """The blob's bytes as an iterator of chunks (not verified here: the caller hashes).
        NotFoundError when the repository does not have it."""
        digest = str(parse_digest(digest))
        path = f"/v2/{self.repo}/blobs/{digest}"
        response = self._open("GET", path, scope=self._scope("pull"))
        try:
            if response.status_code == 404:
                raise NotFoundError(f"{self.host}/{self.repo} has no blob {digest}")
            if response.status_code != 200:
                body = _read_some(response, self._window)
                raise self._unexpected(
                    "GET", path, _Answer(response.status_code, response.headers, body, response.url)
                )
            yield self._chunks(response, path)
        finally:
            response.close()

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> str:
        """PUT the manifest under `reference` (a tag or its digest); its digest."""
        reference = validate_reference(reference)
        digest = _sha(data, "sha256")
        if ":" in reference:
            digest = self._verify(data, [reference], reference)
        path = f"/v2/{self.repo}/manifests/{reference}"
        answer = self._exchange(
            "PUT",
            path,
            scope=self._scope("pull,push"),
            headers={"Content-Type": media_type},
            content=data,
            limit=ERROR_BODY_LIMIT,
        )
        if answer.status not in (200, 201, 202):
            raise self._unexpected("PUT", path, answer)
        header = answer.headers.get("docker-content-digest")
        if header and self._header_digest(header, path) != digest:
            raise CorruptError(
                f"{self.host} stored the manifest {reference} as {header}, not {digest}",
                where=self._where(reference),
            )
        return digest

    def delete_manifest(self, digest: str) -> bool:
        """DELETE the manifest `digest`: True when deleted, False when already gone (404).
        RefusedError when the registry does not allow deletion (405, 400 UNSUPPORTED)."""
        digest = str(parse_digest(digest))
        path = f"/v2/{self.repo}/manifests/{digest}"
        answer = self._exchange("DELETE", path, scope=self._scope("delete"), limit=ERROR_BODY_LIMIT)
        if answer.status in (200, 202, 204):
            return True
        if answer.status == 404:
            return False
        codes = [c for c, _ in _errors(answer.body)]
        if answer.status == 405 or (answer.status == 400 and "UNSUPPORTED" in codes):
            raise RefusedError(
                f"{self.host} does not allow deleting manifests ({answer.status}"
                f"{' ' + ', '.join(codes) if codes else ''}): deletion is disabled in the registry",
                hint="distribution deletes only with storage.delete.enabled: true in its config",
            )
        raise self._unexpected("DELETE", path, answer)

    def push_blob(self, data: bytes) -> str:
        """Upload `data` as a blob (POST an upload, PUT it whole); its digest. Nothing is sent
        when the repository already has the blob."""
        digest = _sha(data, "sha256")
        if self.head_blob(digest) == len(data):
            return digest
        path = f"/v2/{self.repo}/blobs/uploads/"
        scope = self._scope("pull,push")
        answer = self._exchange("POST", path, scope=scope, limit=ERROR_BODY_LIMIT)
        if answer.status != 202:
            raise self._unexpected("POST", path, answer)
        location = answer.headers.get("location")
        if not location:
            raise RegistryError(f"{self.host} answered POST {path} without a Location")
        url = answer.url.join(location)
        self._same_origin(answer.url, url)
        url = url.copy_merge_params({"digest": digest})
        answer = self._exchange(
            "PUT",
            str(url),
            scope=scope,
            headers={"Content-Type": "application/octet-stream"},
            content=data,
            limit=ERROR_BODY_LIMIT,
        )
        if answer.status not in (201, 204):
            raise self._unexpected("PUT", path, answer)
        header = answer.headers.get("docker-content-digest")
        if header and self._header_digest(header, path) != digest:
            raise CorruptError(f"{self.host} stored the blob {digest} as {header}")
        return digest

    def start_upload(self, mount: str | None = None, from_repo: str | None = None) -> httpx.URL | None:
        """POST a blob upload; its URL. With `mount` and `from_repo`, ask the registry to mount
        blob `mount` from repository `from_repo` of the same registry instead: None when it did
        (201); a registry that cannot (no such blob there, no pull right on it) starts an upload
        (202), whose URL is returned as without the mount."""
        path = f"/v2/{self.repo}/blobs/uploads/"
        if mount is not None and from_repo is not None:
            query = urlencode({"mount": str(parse_digest(mount)), "from": validate_repo(from_repo)})
            path = f"{path}?{query}"
        answer = self._exchange("POST", path, scope=self._scope("pull,push"), limit=ERROR_BODY_LIMIT)
        if answer.status == 201 and mount is not None:
            return None
        if answer.status != 202:
            raise self._unexpected("POST", path.split("?", 1)[0], answer)
        location = answer.headers.get("location")
        if not location:
            raise RegistryError(f"{self.host} answered POST {path} without a Location")
        url = answer.url.join(location)
        self._same_origin(answer.url, url)
        return url

    def push_blob_stream(self, upload: httpx.URL, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """Finish the upload `upload` (start_upload) in one streamed PUT of `size` bytes from
        `chunks`, completing it as blob `digest` (the registry hashes what it gets and refuses
        other content). Sent once, never retried (the chunks are consumed): an error raised by
        `chunks` (a digest mismatch found at the source) aborts the request and is raised as it
        is; the upload is then cancelled, so nothing of it becomes visible."""
        digest = str(parse_digest(digest))
        path = f"/v2/{self.repo}/blobs/uploads/"
        url = upload.copy_merge_params({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        try:
            response = self._open(
                "PUT", str(url), scope=self._scope("pull,push"), headers=headers, content=chunks, once=True
            )
        except BaseException:
            self.cancel_upload(upload)
            raise
        try:
            body = _read_some(response, self._window) if response.status_code not in (201, 204) else b""
        finally:
            response.close()
        if response.status_code not in (201, 204):
            self.cancel_upload(upload)
            answer = _Answer(response.status_code, response.headers, body, response.url)
            if response.status_code == 400 and any(c == "DIGEST_INVALID" for c, _ in _errors(body)):
                raise CorruptError(f"{self.host} refused blob {digest}: the content sent does not match it")
            raise self._unexpected("PUT", path, answer)
        header = response.headers.get("docker-content-digest")
        if header and self._header_digest(header, path) != digest:
            raise CorruptError(f"{self.host} stored the blob {digest} as {header}")

    def cancel_upload(self, upload: httpx.URL) -> None:
        """DELETE an unfinished upload, best effort (the registry purges abandoned ones anyway)."""
        with suppress(OcicacheError):
            self._exchange("DELETE", str(upload), scope=self._scope("pull,push"), limit=ERROR_BODY_LIMIT)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """[fn(item) for item in items] in at most `workers` threads, in order; the first error
        (in completion order) is raised and the items not started yet are dropped."""
        todo = list(items)
        if len(todo) <= 1 or self.workers == 1:
            return [fn(item) for item in todo]
        pool = ThreadPoolExecutor(min(self.workers, len(todo)), thread_name_prefix="ocicache-registry")
        try:
            futures = [pool.submit(fn, item) for item in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                error = f.exception() if f in done else None
                if error is not None:
                    raise error
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- requests -----------------------------------------------------------------------

    def _scope(self, actions: str) -> str:
        return f"repository:{self.repo}:{actions}"

    def _where(self, reference: str) -> str:
        sep = "@" if ":" in reference else ":"
        return f"{self.host}/{self.repo}{sep}{reference}"

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        limit: int = 0,
        limit_name: str = "limit",
    ) -> _Answer:
        """One request with its body read: success bodies up to `limit` (TooLargeError past
        it), error bodies up to ERROR_BODY_LIMIT. Read failures are retried like the request."""
        tries = [0]  # failed attempts so far, shared with _open
        while True:
            response = self._open(method, path, scope=scope, headers=headers, content=content, tries=tries)
            try:
                ok = 200 <= response.status_code < 300
                if method == "HEAD":
                    body = b""
                elif ok:
                    body = self._read(response, limit, limit_name, method, path)
                else:
                    body = _read_some(response, self._window)
                return _Answer(response.status_code, response.headers, body, response.url)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                tries[0] += 1
                if tries[0] > self._retries_for(e, tries):
                    raise self._network_error(method, path, e, tries[0]) from None
                self._sleep(self._delay(tries[0] - 1, None))
            finally:
                response.close()

    def _retries_for(self, e: Exception, tries: list[int]) -> int:
        """How many retries a failure gets: a timeout is retried once (a silent server must not
        hold a command for minutes), other failures `retries` times."""
        if isinstance(e, httpx.TimeoutException):
            return min(self.retries, 1)
        return self.retries

    def _open(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        tries: list[int] | None = None,
        once: bool = False,
    ) -> httpx.Response:
        """Send until an answer that is not a redirect, a 401 we can answer, or a retryable
        failure; the response is open (streamed): the caller closes it. `once`: a body that
        can be sent only once (a stream): no retry, no redirect, no second try after a 401."""
        url = httpx.URL(self.target.base_url).join(path)
        origin = url
        tries = [0] if tries is None else tries
        redirects = 0
        sent_auth: str | None = None
        refreshed = False
        while True:
            request_headers = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                request_headers["Authorization"] = auth
            sent_auth = auth
            request = self._http.build_request(method, url, headers=request_headers, content=content)
            try:
                response = self._http.send(request, stream=True)
            except (
                httpx.TimeoutException,
                httpx.ReadError,
                httpx.WriteError,
                httpx.RemoteProtocolError,
            ) as e:
                tries[0] += 1
                if once or tries[0] > self._retries_for(e, tries):
                    raise self._network_error(method, path, e, tries[0]) from None
                self._sleep(self._delay(tries[0] - 1, None))
                continue
            except httpx.ConnectError as e:
                raise self._connect_error(e) from None
            except httpx.HTTPError as e:
                raise RegistryError(f"{self.host}: {method} {path}: {_one_line(e)}") from None
            status = response.status_code
            if once and (status in REDIRECT_STATUSES or status == 401):
                return response  # the body is gone: the caller reports the answer
            if status in REDIRECT_STATUSES:
                location = response.headers.get("location")
                response.close()
                if not location:
                    raise RegistryError(
                        f"{self.host} answered {status} to {method} {path} without a Location"
                    )
                target = url.join(location)
                self._same_origin(origin, target)
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise RegistryError(f"{self.host}: {method} {path}: more than {MAX_REDIRECTS} redirects")
                if status == 303 and method != "HEAD":
                    method, content = "GET", None
                url = target
                continue
            if status == 401:
                challenges = response.headers.get_list("www-authenticate")
                response.close()
                if refreshed:
                    raise self._refused(sent_auth)
                challenge = _parse_challenges(challenges)
                if challenge is None:
                    raise RegistryError(
                        f"401 unauthorized at {self.host}: {method} {path}: "
                        + (
                            "no WWW-Authenticate challenge"
                            if not challenges
                            else "unsupported authentication"
                        )
                    )
                if sent_auth and challenge.scheme == "basic":
                    raise self._refused(sent_auth)
                self._answer_challenge(challenge, scope, sent_auth)
                refreshed = True
                continue
            if status in RETRY_STATUSES and tries[0] < self.retries and not once:
                delay = self._delay(tries[0], response.headers.get("retry-after"))
                response.close()
                tries[0] += 1
                self._sleep(delay)
                continue
            return response

    def _read(self, response: httpx.Response, limit: int, limit_name: str, method: str, path: str) -> bytes:
        size = _content_length(response.headers)
        if size is not None and size > limit:
            raise self._too_large(method, path, limit, limit_name, size)
        chunks: list[bytes] = []
        total = 0
        for chunk in _flowing(response, self._window):
            total += len(chunk)
            if total > limit:
                raise self._too_large(method, path, limit, limit_name, None)
            chunks.append(chunk)
        return b"".join(chunks)

    def _chunks(self, response: httpx.Response, path: str) -> Iterator[bytes]:
        try:
            yield from _flowing(response, self._window)
        except httpx.HTTPError as e:
            raise self._network_error("GET", path, e, 1) from None

    def _too_large(
        self, method: str, path: str, limit: int, limit_name: str, size: int | None
    ) -> TooLargeError:
        got = f"{size} bytes, more" if size is not None else "more"
        return TooLargeError(
            f"{self.host} answered {method} {path} with {got} than the {limit_name} of {limit} bytes",
            limit=limit,
            limit_name=limit_name,
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            seconds = _retry_after(retry_after)
            if seconds is not None:
                return min(RETRY_AFTER_CAP, max(0.0, seconds))
        return min(RETRY_AFTER_CAP, self.backoff * float(2**attempt)) * random.uniform(0.5, 1.5)

    def _same_origin(self, origin: httpx.URL, target: httpx.URL) -> None:
        if (target.scheme, target.host, _port(target)) != (origin.scheme, origin.host, _port(origin)):
            other = target.netloc.decode("ascii", "replace") or str(target)
            if target.scheme != origin.scheme:
                other = f"{target.scheme}://{other}"
            raise RegistryError(
                f"{self.host} redirected to {other}; ocicache does not follow redirects to another host"
            )

    # -- authentication -----------------------------------------------------------------

    def _creds(self) -> Credentials | None:
        with self._lock:
            if self._credentials is _DEFAULT:
                self._credentials = credentials_for(self.host)
            creds = self._credentials
        return creds if isinstance(creds, Credentials) else None

    def _auth_header(self, scope: str) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._creds()
            return None if creds is None else _basic(creds)
        with self._token_lock:
            token = self._tokens.get(scope)
            if token is None or token.expires <= self._clock():
                token = self._fetch_token(challenge, [scope])
                self._tokens[scope] = token
        return f"Bearer {token.value}"

    def _answer_challenge(self, challenge: _Challenge, scope: str, sent: str | None) -> None:
        if challenge.scheme == "basic":
            creds = self._creds()
            if creds is None:
                raise RegistryError(
                    f"401 unauthorized at {self.host}: no credentials for {self.host} in {config_display()}",
                    hint=f"docker login {self.host}",
                )
            if creds.identity_token:
                raise RegistryError(
                    f"401 unauthorized at {self.host}: it asks for a password, and the credentials for"
                    f" {self.host} are an identity token"
                )
            self._challenge = challenge
            return
        scopes = [scope]
        named = challenge.params.get("scope", "")
        scopes += [s for s in named.split() if s not in scopes]
        with self._token_lock:
            self._challenge = challenge
            token = self._tokens.get(scope)
            if token is not None and sent == f"Bearer {token.value}":
                del self._tokens[scope]  # rejected: expired early or revoked
            self._tokens[scope] = self._fetch_token(challenge, scopes)

    def _fetch_token(self, challenge: _Challenge, scopes: list[str]) -> _Token:
        realm = challenge.params.get("realm")
        if not realm:
            raise RegistryError(f"401 unauthorized at {self.host}: a Bearer challenge without a realm")
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            raise RegistryError(f"{self.host} names a token realm that is not a URL: {realm!r}") from None
        if url.scheme not in ("http", "https"):
            raise RegistryError(f"{self.host} names a token realm that is not http(s): {realm!r}")
        creds = self._creds()
        if (
            creds is not None
            and url.scheme == "http"
            and not self.target.insecure
            and not is_loopback(url.netloc.decode("ascii", "replace"))
        ):
            raise RegistryError(
                f"{self.host} sends its token requests to {realm} over plain HTTP;"
                " ocicache does not send credentials there"
            )
        service = challenge.params.get("service")
        where = url.copy_with(query=None, fragment=None)
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.secret, "client_id": "ocicache"}
            if service:
                form["service"] = service
            form["scope"] = " ".join(scopes)
            request = self._http.build_request("POST", url, data=form)
        else:
            pairs = [("service", service)] if service else []
            params = httpx.QueryParams(tuple(pairs + [("scope", s) for s in scopes]))
            headers = {"Authorization": _basic(creds)} if creds is not None else {}
            request = self._http.build_request("GET", url.copy_merge_params(params), headers=headers)
        try:
            response = self._http.send(request, stream=True)
            try:
                body = _read_some(response, self._window, TOKEN_LIMIT + 1)
            finally:
                response.close()
        except httpx.ConnectError as e:
            raise self._connect_error(e, host=url.netloc.decode("ascii", "replace")) from None
        except httpx.HTTPError as e:
            raise RegistryError(f"token server {where} for {self.host}: {_one_line(e)}") from None
        status = response.status_code
        if status in (401, 403):
            if creds is None:
                raise RegistryError(
                    f"401 unauthorized at {self.host}: the token server {where} wants credentials and"
                    f" there are no credentials for {self.host} in {config_display()}",
                    hint=f"docker login {self.host}",
                )
            raise RegistryError(
                f"401 unauthorized at {self.host}: credentials for {self.host}{_who(creds)} were refused"
                f" by the token server {where} ({status})"
            )
        if status != 200:
            raise RegistryError(
                f"token server {where} for {self.host} answered {status} {response.reason_phrase}"
            )
        if len(body) > TOKEN_LIMIT:
            raise RegistryError(
                f"token server {where} for {self.host} answered more than {TOKEN_LIMIT} bytes"
            )
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        value = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(value, str) or not value or any(c in value for c in "\r\n"):
            raise RegistryError(f"token server {where} for {self.host} answered without a token")
        expires_in = doc.get("expires_in") if isinstance(doc, dict) else None
        seconds = expires_in if isinstance(expires_in, int) and expires_in > 0 else TOKEN_DEFAULT_EXPIRY
        margin = min(10.0, seconds / 10)
        return _Token(value, self._clock() + seconds - margin)

    def _refused(self, sent: str | None) -> RegistryError:
        creds = self._creds()
        if sent is None or creds is None:
            return RegistryError(
                f"401 unauthorized at {self.host}: no credentials for {self.host} in {config_display()}",
                hint=f"docker login {self.host}",
            )
        return RegistryError(
            f"401 unauthorized at {self.host}: credentials for {self.host}{_who(creds)} were refused"
        )

    # -- errors -------------------------------------------------------------------------

    def _connect_error(self, e: httpx.ConnectError, host: str | None = None) -> RegistryError:
        host = host or self.host
        text = _one_line(e)
        if _is_tls(e):
            return RegistryError(
                f"TLS handshake with {host} failed: {text}",
                hint="for plain HTTP use --insecure or registry.insecure=true",
            )
        return RegistryError(f"cannot connect to {host}: {text}")

    def _network_error(self, method: str, path: str, e: Exception, attempts: int) -> RegistryError:
        what = "timed out" if isinstance(e, httpx.TimeoutException) else "failed"
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        return RegistryError(
            f"{self.host}: {method} {path} {what}{tries}: {_one_line(e) or type(e).__name__}"
        )

    def _unexpected(self, method: str, path: str, answer: _Answer) -> RegistryError:
        status = answer.status
        errors = _errors(answer.body)
        said = "; ".join(f"{c}: {m}" if m else c for c, m in errors[:3])
        if not said and answer.body and answer.body.lstrip()[:1] not in (b"{", b"["):
            said = "an answer that is not the registry API"
        text = f"{self.host} answered {status} {_reason(status)} to {method} {path}"
        if status in RETRY_STATUSES and self.retries:
            text += f" after {self.retries + 1} attempts"
        if status == 403:
            text = f"403 denied at {self.host}: {method} {path}"
        return RegistryError(text + (f" ({said})" if said else ""))

    def _header_digest(self, header: str, path: str) -> str:
        try:
            return str(parse_digest(header.strip()))
        except UsageError:
            raise CorruptError(
                f"{self.host} answered {path} with Docker-Content-Digest {header[:100]!r}"
            ) from None

    def _verify(self, data: bytes, expected: list[str], reference: str) -> str:
        """The digest of data; CorruptError when it is not every expected digest."""
        digest = _sha(data, expected[0].split(":", 1)[0]) if expected else _sha(data, "sha256")
        for want in expected:
            got = _sha(data, want.split(":", 1)[0])
            if got != want:
                raise CorruptError(
                    f"{self.host}/{self.repo}: {reference} was served with content of digest {got},"
                    f" not {want}"
                )
        return digest

    def _tags_page(self, answer: _Answer, path: str) -> list[str]:
        try:
            doc = json.loads(answer.body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise CorruptError(f"{self.host} answered GET {path} with something that is not a JSON object")
        tags = doc.get("tags")
        if tags is None:
            return []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise CorruptError(f"{self.host} answered GET {path} with tags that are not a list of strings")
        return tags

    def _next_link(self, answer: _Answer) -> str | None:
        for link in answer.headers.get_list("link", split_commas=True):
            m = re.match(r"\s*<([^>]*)>\s*;(.*)", link)
            if m and re.search(r'\brel\s*=\s*"?next"?', m.group(2)):
                url = answer.url.join(m.group(1))
                self._same_origin(answer.url, url)
                if not url.path.startswith("/v2/"):
                    raise RegistryError(f"{self.host} answered tags/list with a next link outside /v2/")
                return url.raw_path.decode("ascii")
        return None


# -- helpers ------------------------------------------------------------------------------


TIMEOUT_ENV = "OCICACHE_REGISTRY_TIMEOUT"
DEFAULT_TIMEOUT = 30.0


def _env_timeout() -> float:
    """The read timeout: $OCICACHE_REGISTRY_TIMEOUT seconds (a positive number), else 30."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV, "") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if 0 < value < 3600 else DEFAULT_TIMEOUT


def _sha(data: bytes, algorithm: str) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.secret}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _who(creds: Credentials) -> str:
    user = f" (user {creds.username}" if creds.username else " (an identity token"
    return user + (f", from {creds.source})" if creds.source else ")")


def _media_type(headers: httpx.Headers) -> str:
    return str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()


def _document_media_type(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return ""
    value = doc.get("mediaType") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else ""


def _content_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def _port(url: httpx.URL) -> int | None:
    return url.port or {"http": 80, "https": 443}.get(url.scheme)


def _flowing(response: httpx.Response, window: float) -> Iterator[bytes]:
    """The body's chunks as they arrive (the transport's reads: up to 64 KiB); httpx.ReadTimeout
    (retried, then reported, as a silent server is) when fewer than STALL_BYTES arrive in
    `window` seconds of waiting for them (the time the caller spends on a chunk not counted)."""
    chunks = response.iter_bytes()  # (as they arrive: a chunk_size would gather them first)
    waited, got = 0.0, 0
    while True:
        began = time.monotonic()
        chunk = next(chunks, None)
        if chunk is None:
            return
        waited += time.monotonic() - began
        got += len(chunk)
        if waited >= window:
            if got < STALL_BYTES:
                raise httpx.ReadTimeout(f"the answer's body stalled: {got} bytes in {waited:.0f} s")
            waited, got = 0.0, 0
        yield chunk


def _read_some(response: httpx.Response, window: float, limit: int = ERROR_BODY_LIMIT) -> bytes:
    """At most `limit` bytes of the body (the rest is left unread)."""
    chunks: list[bytes] = []
    total = 0
    for chunk in _flowing(response, window):
        chunks.append(chunk)
        total += len(chunk)
        if total >= limit:
            break
    return b"".join(chunks)[:limit]


def _errors(body: bytes) -> list[tuple[str, str]]:
    """(code, message) of a distribution error answer ({"errors": [...]}), cut short."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return []
    out = []
    for e in errors:
        if isinstance(e, dict):
            code = str(e.get("code", ""))[:60]
            message = str(e.get("message", ""))[:200]
            out.append((_one_line(code), _one_line(message)))
    return out


_CHALLENGE = re.compile(r'([A-Za-z][\w-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


def _parse_challenges(values: list[str]) -> _Challenge | None:
    """The Bearer challenge if one is offered, else the Basic one, else None."""
    found: dict[str, _Challenge] = {}
    for value in values:
        for m in re.finditer(r"(?:^|,)\s*(Basic|Bearer)\b((?:[^,]|,\s*[\w-]+\s*=)*)", value, re.IGNORECASE):
            scheme = m.group(1).lower()
            params = {
                k.lower(): (v[1:-1].replace('\\"', '"') if v.startswith('"') else v)
                for k, v in _CHALLENGE.findall(m.group(2))
            }
            found.setdefault(scheme, _Challenge(scheme, params))
    return found.get("bearer") or found.get("basic")


def _retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _is_tls(e: BaseException) -> bool:
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 8:
        if isinstance(cur, ssl.SSLError) or "SSL" in str(cur) or "CERTIFICATE" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


def _one_line(e: object) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _reason(status: int) -> str:
    try:
        return httpx.codes.get_reason_phrase(status)
    except ValueError:  # pragma: no cover
        return ""
