#!/usr/bin/env bash
# Makes a Debian bookworm base image without a registry: mmdebstrap fetches the packages from the
# Debian mirror, `docker import` turns the tarball into an image. Use it where no registry can be
# reached (this project's build machines), then build deployments/Dockerfile with
#   --build-arg BASE_IMAGE=local/bookworm:base
#
# On a machine whose TLS goes through an inspecting proxy, pip in the build trusts only what the
# image holds: HOST_CA (default: this host's bundle) is copied into the base as
# /usr/local/share/ca-bundle/host.crt, which build-image.sh hands to pip for the build only (PIP_CERT is a
# build argument, not part of the image's environment). Set HOST_CA= (empty) to leave it out.
#
# Needs: docker (daemon running), mmdebstrap (apt-get install -y mmdebstrap), root.
set -euo pipefail

TAG=${1:-local/bookworm:base}
SUITE=${SUITE:-bookworm}
HOST_CA=${HOST_CA-/etc/ssl/certs/ca-certificates.crt}

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG exists"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "base-image.sh: mmdebstrap is missing (apt-get install -y mmdebstrap)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hooks=()
changes=(--change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]')
if [[ -n "$HOST_CA" ]]; then
  [[ -r "$HOST_CA" ]] || { echo "base-image.sh: HOST_CA=$HOST_CA cannot be read" >&2; exit 1; }
  hooks=(--customize-hook="mkdir -p \"\$1/usr/local/share/ca-bundle\" && cp '$HOST_CA' \"\$1/usr/local/share/ca-bundle/host.crt\"")
fi
mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates "${hooks[@]}" \
  "$SUITE" "$work/base.tar"
docker import "${changes[@]}" "$work/base.tar" "$TAG"
echo "base image $TAG made from Debian $SUITE"
