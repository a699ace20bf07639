#!/usr/bin/env bash
# Trains a sweep on a Cloud TPU pod slice: the same command on every worker; jax.distributed
# detects the pod. The repository must be installed on every worker (setup step below).
#
#   TPU_NAME=my-pod ZONE=us-central2-b CONFIG=ensembles/configs/cifar10_paper.py \
#     WORKDIR=/mnt/shared/runs/cifar10 bash ensembles/launch/tpu_pod.sh
#   DRY_RUN=1 TPU_NAME=... ZONE=... CONFIG=... WORKDIR=... bash ensembles/launch/tpu_pod.sh
#
# Setup once per pod: SETUP=1 (installs the repository with the `tpu` extra on all workers).
# Preempted? Run the same command again: training resumes.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"
: "${CONFIG:?set CONFIG to a sweep config file}"
: "${WORKDIR:?set WORKDIR to a POSIX path every worker can write (NFS or a gcsfuse mount)}"
REPO_DIR=${REPO_DIR:-ensembles}
if [[ -n "${SETUP:-}" ]]; then
  remote="cd ${REPO_DIR} && pip install -e '.[tpu]'"
else
  remote="cd ${REPO_DIR} && python -m ensembles.launch.train --distributed --config=${CONFIG} --workdir=${WORKDIR} ${EXTRA_FLAGS:-}"
fi
command=(gcloud compute tpus tpu-vm ssh "${TPU_NAME}" "--zone=${ZONE}" --worker=all
         "--command=${remote}")
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "${command[@]}"; echo
  exit 0
fi
exec "${command[@]}"
