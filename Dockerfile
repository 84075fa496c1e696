# The testbed image: the demo services and the load generator, one image for every pod.
#
#   docker build --build-arg PYTHON_IMAGE=<the pinned python image> -t <tag> .
#
# The base image is pinned by tag and digest in one place, manifests/versions.toml ([images] python), and
# passed in at build time; there is no default, so a build without the pin fails instead of drifting.
# The kind platform tags the image with a hash of the pin and of every file copied below
# (testbed/kube/actions.py image_tag). There is no ENTRYPOINT: each pod's command comes from
# testbed/kube/manifests.py.
ARG PYTHON_IMAGE

# Stage `wheels`: a wheel of every pinned package. PyPI has none of hdrhistogram 0.10.8 for linux/arm64
# (only x86_64 ones), so pip builds it from its sdist, a C extension: the compiler stays in this stage.
# The sdist (setup.py, no pyproject.toml) builds with setuptools and pbr (setup_requires), both taken from
# the lock and built without isolation, so that nothing unpinned is fetched.
FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/image.txt /tmp/requirements/image.txt
RUN grep -E '^(setuptools|pbr)==' /tmp/requirements/image.txt > /tmp/requirements/build.txt \
    && pip install --no-deps -r /tmp/requirements/build.txt \
    && pip wheel --no-deps --no-build-isolation -r /tmp/requirements/image.txt -w /wheels

FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# The pods' Python packages, exactly as pinned (nox -s lock-image writes the file), from the wheels built
# above alone (--no-index): --no-deps, so that nothing is resolved at build time; `pip check` fails the
# build if the pinned set misses a dependency. No compiler in this stage.
COPY --from=wheels /wheels /wheels
COPY requirements/image.txt ./requirements/image.txt
RUN pip install --no-deps --no-index --find-links /wheels -r requirements/image.txt && rm -rf /wheels \
    && pip check

# Source and topologies at /app: the manifests run `--topology /app/scenarios/topologies/<file>`.
COPY pyproject.toml README.md ./
COPY testbed ./testbed
COPY scenarios ./scenarios
# The testbed alone (--no-deps): the analysis and host-side dependencies (IMAGE_EXCLUDES in noxfile.py)
# stay out. --no-build-isolation: built with the setuptools of the lock (installed above over the base
# image's 79.0.1, docker-library/repo-info repos/python/remote/3.11.16-slim-bookworm.md), so nothing
# unpinned is fetched.
# The import proves the pods' entry points load with the packages installed above; from /, because in
# /app the script's '' on sys.path would import /app/testbed, not the installed package.
RUN pip install --no-deps --no-build-isolation . && rm -rf build testbed.egg-info \
    && cd / && python -c "import testbed.sut.service, testbed.loadgen.engine, testbed.loadgen.worker, testbed.cli"

# Numeric, so that the kubelet can check `runAsNonRoot` (testbed/kube/manifests.py: RUN_AS_USER).
RUN groupadd --gid 10001 testbed \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin testbed
USER 10001:10001
