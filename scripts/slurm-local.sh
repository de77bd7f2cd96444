#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for testing `dtl sweep --backend slurm` for real:
# installs Debian's slurm-wlm and munge when missing, writes a configuration for localhost (all
# of this machine's CPUs and memory as one node in partition `debug`, no accounting database, no
# cgroups), and starts munged, slurmctld and slurmd. Needs root (or sudo) for the packages and the
# daemons.
#
#   scripts/slurm-local.sh start    install (if needed), configure, start; waits until the node is idle
#   scripts/slurm-local.sh stop     stops the three daemons
#   scripts/slurm-local.sh status   sinfo
#
# Exit status 3 means Slurm could not be installed or started here (no package access, not
# root): callers skip what needs it and say so.
set -euo pipefail

STATE=${SLURM_LOCAL_STATE:-/var/tmp/dtl-slurm}
CONF=/etc/slurm/slurm.conf
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
        echo "slurm-local: not root and no passwordless sudo: cannot start Slurm here" >&2
        exit 3
    fi
fi

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    echo "slurm-local: installing slurm-wlm and munge from Debian" >&2
    if ! ($SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q slurm-wlm munge) >&2; then
        echo "slurm-local: the packages slurm-wlm and munge could not be installed" >&2
        exit 3
    fi
}

configure() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    $SUDO mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" /var/log/slurm /run/munge /var/lib/munge /var/log/munge /etc/munge
    $SUDO tee "$CONF" >/dev/null <<EOF
# Written by dtl's scripts/slurm-local.sh: one node, localhost.
ClusterName=dtl-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MaxArraySize=100000
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [ ! -s /etc/munge/munge.key ]; then
        $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    $SUDO chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
    $SUDO chmod 400 /etc/munge/munge.key
}

start() {
    install
    configure
    pgrep -x munged >/dev/null || $SUDO -u munge munged 2>/dev/null || $SUDO munged --force
    pgrep -x slurmctld >/dev/null || $SUDO slurmctld -c
    pgrep -x slurmd >/dev/null || $SUDO slurmd
    for _ in $(seq 1 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "slurm-local: node $(hostname -s) is up" >&2
            sinfo >&2
            return
        fi
        sleep 1
    done
    echo "slurm-local: the node did not come up; /var/log/slurm/slurmctld.log and slurmd.log say why:" >&2
    tail -n 5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 3
}

stop() {
    $SUDO pkill -x slurmd || true
    $SUDO pkill -x slurmctld || true
    $SUDO pkill -x munged || true
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
