#!/usr/bin/env bash
# A throw-away single-node SLURM on 127.0.0.1 (munge, MariaDB, slurmdbd, slurmctld, slurmd).
#
#   tests/launch/slurm_cluster.sh start DIR   # bring it up; prints `export SLURM_CONF=DIR/etc/slurm.conf`
#   tests/launch/slurm_cluster.sh stop DIR    # stop every daemon it started (by PID file)
#
# Everything (configs, DB, spool, state, logs, sockets) lives under DIR; the ports are
# picked free at start, so it does not clash with a system SLURM or with another copy.
# Needs root and Debian's `slurm-wlm munge slurmdbd mariadb-server` (nothing is started
# by the packages). Accounting (slurmdbd) is required: submitit reads job states with
# sacct. Clients find the cluster through SLURM_CONF (slurmdbd reads slurmdbd.conf from
# the same folder). DIR must be traversable by the munge and mysql users (mode 755).
set -Eeuo pipefail
export PATH=$PATH:/usr/sbin:/sbin

cmd=${1:?usage: slurm_cluster.sh start|stop DIR}
dir=${2:?usage: slurm_cluster.sh start|stop DIR}
dir=$(realpath -m "$dir")
# Each daemon writes its own PID file; `stop` signals them all.
PIDFILES=(run/slurmd.pid run/slurmctld.pid run/slurmdbd.pid db/mysqld.pid munge/munged.pid)

log() { echo "slurm_cluster: $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      log "timed out waiting for $what; logs in $dir/log:"
      tail -n 20 "$dir"/log/* "$dir"/db/mysqld.log >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

free_ports() {  # free_ports N: N distinct free TCP ports on 127.0.0.1
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

stop() {  # TERM every daemon at once, wait up to 10 s, then KILL what is left
  local pids=() rel pid
  for rel in "${PIDFILES[@]}"; do
    [[ -s $dir/$rel ]] || continue
    pid=$(cat "$dir/$rel")
    kill "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$dir/$rel"
  done
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

start() {
  for rel in "${PIDFILES[@]}"; do
    if [[ -s $dir/$rel ]] && kill -0 "$(cat "$dir/$rel")" 2>/dev/null; then
      log "a cluster is already running in $dir (stop it first)"; exit 4
    fi
  done
  for bin in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct; do
    command -v "$bin" >/dev/null || { log "missing $bin"; exit 3; }
  done
  [[ $(id -u) == 0 ]] || { log "needs root"; exit 3; }
  mkdir -p "$dir"/{etc,run,log,munge,db,spool/ctld,spool/d}
  chmod 755 "$dir" "$dir"/run "$dir"/log
  local host; host=$(hostname -s)
  local ctld_port d_port dbd_port db_port
  read -r ctld_port d_port dbd_port db_port < <(free_ports 4)
  local sock=$dir/munge/munge.sock

  # munge: private key and socket, run as the munge user.
  chown munge:munge "$dir"/munge && chmod 755 "$dir"/munge
  head -c 1024 /dev/urandom >"$dir"/munge/munge.key
  chown munge:munge "$dir"/munge/munge.key && chmod 600 "$dir"/munge/munge.key
  runuser -u munge -- munged --socket="$sock" --key-file="$dir"/munge/munge.key \
    --pid-file="$dir"/munge/munged.pid --log-file="$dir"/munge/munged.log \
    --seed-file="$dir"/munge/munged.seed
  wait_for 10 munged bash -c "munge -S '$sock' -n | unmunge -S '$sock'"

  # MariaDB: private datadir, TCP on 127.0.0.1 only.
  chown mysql:mysql "$dir"/db
  mariadb-install-db --no-defaults --datadir="$dir"/db --user=mysql --skip-test-db \
    --auth-root-authentication-method=socket --innodb-log-file-size=8M \
    >"$dir"/log/mysql-install.log 2>&1
  mariadbd --no-defaults --user=mysql --datadir="$dir"/db --socket="$dir"/db/mysqld.sock \
    --port="$db_port" --bind-address=127.0.0.1 --pid-file="$dir"/db/mysqld.pid \
    --log-error="$dir"/db/mysqld.log --innodb-buffer-pool-size=32M --innodb-log-file-size=8M \
    >/dev/null 2>&1 &
  wait_for 30 mariadb mariadb --no-defaults --socket="$dir"/db/mysqld.sock -uroot -e 'select 1'
  mariadb --no-defaults --socket="$dir"/db/mysqld.sock -uroot -e "
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

  cat >"$dir"/etc/slurmdbd.conf <<EOF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdAddr=127.0.0.1
DbdHost=$host
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
DebugLevel=info
EOF
  chmod 600 "$dir"/etc/slurmdbd.conf

  local mem; mem=$(awk '/MemTotal/ {print int($2 / 1024) - 1024}' /proc/meminfo)
  cat >"$dir"/etc/slurm.conf <<EOF
ClusterName=etstest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$sock,cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
SchedulerParameters=bf_interval=1,sched_interval=2
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
KillWait=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$sock
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$dir/etc/slurm.conf

  slurmdbd
  wait_for 30 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/$dbd_port"
  slurmctld -f "$SLURM_CONF"
  wait_for 30 slurmctld scontrol ping
  slurmd -f "$SLURM_CONF"
  wait_for 30 "an idle node" bash -c "sinfo -h -o %t | grep -qx idle"
  wait_for 30 "accounting" bash -c "sacctmgr -n list cluster format=cluster | grep -q etstest"
  log "up in ${SECONDS}s (SLURM_CONF=$SLURM_CONF)"
  echo "export SLURM_CONF=$SLURM_CONF"
}

case $cmd in
  start) trap 'stop' ERR; start ;;
  stop) stop ;;
  *) echo "usage: slurm_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
