# The testbed image: the demo services and the load generator, one image for every pod.
#
#   docker build --build-arg PYTHON_IMAGE=<the pinned python image> -t <tag> .
#
# The base image is pinned (with its digest) in one place in the project and passed in at build time;
# there is no default, so a build without the pin fails instead of drifting. There is no ENTRYPOINT:
# each pod's command comes from testbed/kube/manifests.py.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Source and topologies at /app: the manifests run `--topology /app/scenarios/topologies/<file>`.
COPY pyproject.toml README.md ./
COPY testbed ./testbed
COPY scenarios ./scenarios
RUN pip install . && rm -rf build testbed.egg-info

# Numeric, so that the kubelet can check `runAsNonRoot` (testbed/kube/manifests.py: RUN_AS_USER).
RUN groupadd --gid 10001 testbed \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin testbed
USER 10001:10001
