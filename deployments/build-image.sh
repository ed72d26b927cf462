#!/usr/bin/env bash
# Builds deployments/Dockerfile from this checkout as lion-distill:<code version> and prints that name.
# `make image` runs it. Settings (environment):
#   BASE_IMAGE   default local/bookworm:base, made by deployments/base-image.sh when missing (no registry
#                needed); debian:bookworm-slim on a machine that reaches Docker Hub
#   TORCH_SPEC   default torch==2.13.0+cpu; torch==2.13.0 for the CUDA build from PyPI on GPU nodes
#   TORCH_INDEX_URL  a torch wheel index, e.g. https://download.pytorch.org/whl/cu128
#   IMAGE        default lion-distill;  IMAGE_TAG  default the code version (lion_core.version.image_tag)
# The host's local pip sources (a wheel folder, file:// indexes in its pip configuration) are served to the
# build on loopback, so the image installs the same files the checkout's .venv was made from.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
IMAGE=${IMAGE:-lion-distill}
CODE_VERSION=$("$PY" -c 'from lion_core.version import code_version; print(code_version())')
# The image copies these folders whole: untracked files in them make it differ from the commit it is named
# after, so the version says so (git's own dirty flag looks at tracked files only).
untracked=$(git ls-files --others --exclude-standard -- lion_core lion_prefect lion_cli flows tasks prompts configs deployments data bench \
  2>/dev/null | head -5 || true)
if [[ -n $untracked && $CODE_VERSION != *dirty* ]]; then
  echo "build-image.sh: untracked files go into the image (${untracked//$'\n'/, }): tagged -dirty" >&2
  CODE_VERSION="$CODE_VERSION.dirty"
fi
TAG=${IMAGE_TAG:-$("$PY" -c 'import sys; from lion_core.version import image_tag; print(image_tag(sys.argv[1]))' "$CODE_VERSION")}
BASE_IMAGE=${BASE_IMAGE:-local/bookworm:base}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}

if [[ $BASE_IMAGE == local/* ]]; then
  bash deployments/base-image.sh "$BASE_IMAGE"
fi

serve=$(mktemp -d)
server_pid=
cleanup() { [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null; rm -rf "$serve"; }
trap cleanup EXIT

# pip's own view of where it finds packages: find-links folders and file:// indexes become loopback URLs.
mapfile -t sources < <("$PY" - <<'EOF'
import shlex, subprocess, sys
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
for line in out.splitlines():
    key, _, value = line.partition("=")
    kind = key.rsplit(".", 1)[-1]
    if kind not in ("find-links", "extra-index-url", "index-url"):
        continue
    for item in shlex.split(value.strip("'\"")):
        path = item[len("file://"):] if item.startswith("file://") else item
        if path.startswith("/"):
            print(f"{'links' if kind == 'find-links' else 'index'} {path}")
EOF
)
links=() indexes=()
# the first free port from 38700: the URLs are build arguments, so a port that stays the same keeps Docker's
# layer cache valid from one build to the next
port=$("$PY" - <<'EOF'
import socket, sys
for port in range(38700, 38800):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    sys.exit("build-image.sh: no free port in 38700-38799 to serve the pip sources on")
EOF
)
for i in "${!sources[@]}"; do
  read -r kind path <<<"${sources[$i]}"
  [[ -d $path ]] || continue
  if [[ $kind == links ]]; then
    ln -s "$path" "$serve/links$i"
    links+=("http://127.0.0.1:$port/links$i/")
  else
    # an index page links its files relative to the index's parent folder: serve that folder. A host
    # index-url becomes an extra index here: the image's pip keeps PyPI, so it also builds on a GPU node.
    ln -s "$(dirname "$path")" "$serve/index$i"
    indexes+=("http://127.0.0.1:$port/index$i/$(basename "$path")")
  fi
done
args=()
if ((${#links[@]} + ${#indexes[@]})); then
  "$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$serve" >/dev/null 2>&1 &
  server_pid=$!
  args+=(--build-arg "PIP_FIND_LINKS=${links[*]}" --build-arg "PIP_EXTRA_INDEX_URL=${indexes[*]}")
fi
[[ -n ${TORCH_INDEX_URL:-} ]] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
# a CA bundle that base-image.sh put into the base, for pip during the build
if docker run --rm --entrypoint test "$BASE_IMAGE" -f /usr/local/share/ca-bundle/host.crt 2>/dev/null; then
  args+=(--build-arg "PIP_CERT=/usr/local/share/ca-bundle/host.crt")
fi

docker build --network host -f deployments/Dockerfile \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_SPEC=$TORCH_SPEC" --build-arg "CODE_VERSION=$CODE_VERSION" \
  "${args[@]}" -t "$IMAGE:$TAG" . >&2
echo "$IMAGE:$TAG"
