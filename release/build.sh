#!/usr/bin/env bash
# Builds a leproxy release into dist/ (or $DIST):
#   leproxy_VERSION_OS_ARCH.tar.gz for each platform (the static binary,
#     README.md, LICENSE.txt, leproxy.service, mapping.example.yml);
#   leproxy_VERSION_ARCH.deb and leproxy-VERSION.ARCH.rpm for each Linux
#     platform, made by nfpm (release/nfpm.yaml);
#   SHA256SUMS of all of them.
# Binaries are static (CGO_ENABLED=0), -trimpath, with the version and the
# commit stamped by -ldflags -X (printed by `leproxy -version`).
#
#   release/build.sh                         # every platform
#   PLATFORMS=linux/amd64 release/build.sh   # one (what CI checks)
#   VERSION=1.2.3 release/build.sh           # default: from git describe
set -euo pipefail
cd "$(dirname "$0")/.."

PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64 linux/armv7 darwin/amd64 darwin/arm64 freebsd/amd64}"
DIST="${DIST:-dist}"
COMMIT="${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
if [ -z "${VERSION:-}" ]; then
	# A tag v1.2.3 on the commit gives 1.2.3; otherwise a semver
	# pre-release naming the last tag (or 0.0.0) and the commit.
	if VERSION="$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null)"; then
		VERSION="${VERSION#v}"
	else
		base="$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || echo v0.0.0)"
		VERSION="${base#v}-dev+g$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
	fi
fi
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	echo "build.sh: warning: the work tree has uncommitted changes; commit $COMMIT does not describe them" >&2
fi

rm -rf "$DIST"
mkdir -p "$DIST"
DIST="$(cd "$DIST" && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
# nfpm at the version release/go.mod pins, built for this machine.
nfpm="$stage/nfpm"
case " $PLATFORMS " in
*" linux/"*) go build -modfile=release/go.mod -o "$nfpm" github.com/goreleaser/nfpm/v2/cmd/nfpm ;;
esac

for platform in $PLATFORMS; do
	goos="${platform%/*}" arch="${platform#*/}" goarch="$arch" goarm=""
	case "$arch" in
	armv7) goarch=arm goarm=7 ;;
	esac
	name="leproxy_${VERSION}_${goos}_${arch}"
	dir="$stage/$name"
	mkdir -p "$dir"
	echo "--- $platform"
	CGO_ENABLED=0 GOOS="$goos" GOARCH="$goarch" GOARM="$goarm" go build -trimpath \
		-ldflags "-s -w -X main.buildVersion=$VERSION -X main.buildCommit=$COMMIT" \
		-o "$dir/leproxy" .
	cp README.md LICENSE.txt contrib/leproxy.service mapping.example.yml "$dir/"
	tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$DIST/$name.tar.gz" "$name"

	if [ "$goos" = linux ]; then
		# The packages' files, under the names release/nfpm.yaml gives them;
		# the unit runs the packaged binary.
		pkg="$stage/pkg-$arch"
		mkdir -p "$pkg"
		cp "$dir/leproxy" README.md LICENSE.txt mapping.example.yml \
			release/mapping.yml release/postinstall.sh release/preremove.sh release/postremove.sh "$pkg/"
		sed 's#/usr/local/bin/leproxy#/usr/bin/leproxy#g' contrib/leproxy.service >"$pkg/leproxy.service"
		cp release/nfpm.yaml "$pkg/"
		nfpmarch="$arch"
		[ "$arch" = armv7 ] && nfpmarch=arm7
		for packager in deb rpm; do
			(cd "$pkg" && VERSION="$VERSION" ARCH="$nfpmarch" "$nfpm" package \
				--config nfpm.yaml --packager "$packager" --target "$DIST/")
		done
	fi
done

(cd "$DIST" && sha256sum -- * >SHA256SUMS)
echo "--- $DIST (version $VERSION, commit $COMMIT)"
ls -l "$DIST"
