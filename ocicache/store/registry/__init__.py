"""Registry targets: a BuildKit cache pushed with `--cache-to type=registry,ref=HOST/REPO:TAG`.

- target.py: `registry://HOST[:PORT]/REPO[:TAG]` and `type=registry,ref=...` parsed into a
  RegistryTarget (HTTPS unless insecure or a loopback host).
- auth.py: credentials as Docker keeps them ($DOCKER_CONFIG/config.json: auths, credHelpers,
  credsStore through docker-credential-* helpers); never printed or logged.
- client.py: the distribution HTTP API over httpx (Basic and Bearer auth, retries with backoff on
  429/5xx, timeouts, bounded reads, digests verified, tags/list paginated, no redirect to another
  host).
- storage.py: distribution's storage directory read read-only (--registry-storage ROOT): each
  tag's history with times, every revision.
- record.py: what ocicache saw of a repository's tags before (under $XDG_CACHE_HOME/ocicache).
- store.py: RegistryStore, the Store (store/base.py) over a repository, so every command reads
  a registry cache the way it reads a directory.
"""
