# The testbed image: the demo services and the load generator, one image for every pod.
#
#   docker build --build-arg PYTHON_IMAGE=<the pinned python image> -t <tag> .
#
# The base image is pinned by tag and digest in one place, manifests/versions.toml ([images] python), and
# passed in at build time; there is no default, so a build without the pin fails instead of drifting.
# The kind platform tags the image with a hash of the pin and of every file copied below
# (testbed/kube/plan.py image_tag). There is no ENTRYPOINT: each pod's command comes from
# testbed/kube/manifests.py.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# The pods' Python packages, exactly as pinned (nox -s lock-image writes the file): --no-deps, so that
# nothing is resolved at build time; `pip check` fails the build if the pinned set misses a dependency.
COPY requirements/image.txt ./requirements/image.txt
RUN pip install --no-deps -r requirements/image.txt && pip check

# Source and topologies at /app: the manifests run `--topology /app/scenarios/topologies/<file>`.
COPY pyproject.toml README.md ./
COPY testbed ./testbed
COPY scenarios ./scenarios
# The testbed alone (--no-deps): the analysis and host-side dependencies (IMAGE_EXCLUDES in noxfile.py)
# stay out. --no-build-isolation: built with the base image's own setuptools (79.0.1 in the pinned build,
# docker-library/repo-info repos/python/remote/3.11.16-slim-bookworm.md), so nothing unpinned is fetched.
# The import proves the pods' entry points load with the packages installed above.
RUN pip install --no-deps --no-build-isolation . && rm -rf build testbed.egg-info \
    && python -c "import testbed.service, testbed.loadgen.engine, testbed.loadgen.worker, testbed.cli"

# Numeric, so that the kubelet can check `runAsNonRoot` (testbed/kube/manifests.py: RUN_AS_USER).
RUN groupadd --gid 10001 testbed \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin testbed
USER 10001:10001
