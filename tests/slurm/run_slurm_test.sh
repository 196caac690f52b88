#!/usr/bin/env bash
# Run a small preset through a one-node SLURM cluster on localhost with the
# real executor plugin and the repository's profiles/slurm, then compare the
# results with a local run of the same preset.
#
# What it does, in order:
#   1. installs Debian's slurm-wlm and munge with apt-get when they are missing;
#   2. writes /etc/slurm/slurm.conf and gres.conf for one node, "localhost",
#      with two fake GPUs (device files that alias /dev/null), and starts
#      munged (unless one already runs), slurmctld and slurmd;
#   3. runs the preset locally, then through SLURM. The TaskProlog blocks the
#      srun step of the first growth job until the test cancels that job with
#      scancel, and the profile's retries must bring the job back;
#   4. checks that every job went through sbatch and ran on the node with the
#      profile's requests, and that the per-seed results equal the local run's;
#   5. stops the daemons it started and removes the files it wrote.
#
# Needs root and, when SLURM is missing, the Debian package mirror. Every
# daemon listens on 127.0.0.1 only. Two runs on one machine take turns.
# KEEP_SLURM_TEST=1 keeps the work folder (logs, both runs) for a look.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
PRESET=presets/slurm_test.yaml
CONFIG_NAME="norm=none_num_layers=1_scale=log_residual_scaling=1.0_linear_attention=False_loss=ce"
TARGETS=(
    "results/slurm_test/growth/$CONFIG_NAME/seed=1234.pickle"
    "results/slurm_test/growth/$CONFIG_NAME/seed=1235.pickle"
    "results/slurm_test/dense/histograms_softmax.npz"
)
# make_batches twice (softmax, histograms), growth_seed twice,
# dense_attention_blocks once, and the retry of the cancelled job.
EXPECTED_SUBMISSIONS=6
SLURM_CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARKER="# Written by tests/slurm/run_slurm_test.sh; removed when it ends."
LOCK_FILE=/run/lock/transformer-curvature-slurm-test.lock
# Upper bounds on waits, so that a broken cluster fails the test instead of
# hanging it. Not timing checks: the steps take seconds.
DAEMON_START_LIMIT_S=60
GATE_LIMIT_S=600

started_pids=()
wrote_config=false
slurm_started=false
snakemake_pid=""
start_seconds=$SECONDS

log() { printf '[slurm-test %3ds] %s\n' "$((SECONDS - start_seconds))" "$*"; }
fail() {
    printf '[slurm-test] FAILED: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    local status=$?
    set +e
    if [[ -n $snakemake_pid ]] && kill -0 "$snakemake_pid" 2>/dev/null; then
        kill "$snakemake_pid"
        wait "$snakemake_pid" 2>/dev/null
    fi

    if [[ $slurm_started == true ]]; then
        # Every job of this private cluster belongs to this test. Let the
        # cancelled jobs end before slurmd goes, so no slurmstepd stays behind.
        touch "$WORK/gate/release" 2>/dev/null
        local jobs
        mapfile -t jobs < <(squeue --noheader --states=PENDING,RUNNING,COMPLETING --format=%i)
        [[ ${#jobs[@]} -gt 0 ]] && scancel "${jobs[@]}"
        for _ in $(seq 150); do
            [[ -z $(squeue --noheader --states=RUNNING,COMPLETING --format=%i) ]] && break
            sleep 0.2
        done
    fi

    # Newest first: slurmd, slurmctld, then munged when this test started it.
    local index pid
    for ((index = ${#started_pids[@]} - 1; index >= 0; index--)); do
        pid=${started_pids[index]}
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    done

    if [[ $wrote_config == true ]]; then
        rm -f "$SLURM_CONF" "$GRES_CONF"
    fi

    if [[ -n ${WORK:-} ]]; then
        if [[ ${KEEP_SLURM_TEST:-0} == 1 || $status != 0 ]]; then
            log "work folder kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    log "stopped the daemons this test started; exit status $status"
}
trap cleanup EXIT

[[ $(id -u) == 0 ]] || fail "needs root to install SLURM and start its daemons; run it as root."
[[ -x $VENV/bin/snakemake ]] || fail "no snakemake in $VENV; run 'make setup' first."

mkdir -p "$(dirname "$LOCK_FILE")"
exec 9>"$LOCK_FILE"
if ! flock --nonblock 9; then
    log "another SLURM test runs on this machine; waiting for it to finish"
    flock 9
fi

install_slurm() {
    local missing=()
    for program in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/sbin/munged; do
        [[ -x $program ]] || missing+=("$program")
    done
    [[ ${#missing[@]} == 0 ]] && return
    log "installing slurm-wlm and munge (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start_munge() {
    if munge --no-input 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already runs; using it"
        return
    fi
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    rm -f /run/munge/munged.pid
    # munged runs as its own user, as Debian's service runs it. It forks into
    # the background and writes its pid file.
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do
        [[ -s /run/munge/munged.pid ]] && break
        sleep 0.1
    done
    [[ -s /run/munge/munged.pid ]] || fail "munged did not start; see /var/log/munge/munged.log."
    started_pids+=("$(cat /run/munge/munged.pid)")
    munge --no-input | unmunge >/dev/null || fail "munged runs but cannot encode and decode a credential."
    log "started munged (pid ${started_pids[-1]})"
}

write_slurm_config() {
    for file in "$SLURM_CONF" "$GRES_CONF"; do
        if [[ -e $file ]] && ! grep -qxF "$MARKER" "$file"; then
            fail "$file exists and was not written by this test; move it away to run the test."
        fi
    done
    if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
        fail "slurmctld or slurmd already runs on this machine; stop it to run the test."
    fi

    mkdir -p "$WORK"/{state,spool,log,fake_gpus}
    # Character devices that alias /dev/null: slurmd needs a device file per GPU.
    for index in 0 1; do
        mknod "$WORK/fake_gpus/nvidia$index" c 1 3
    done

    # The node's hardware as slurmd -C reports it (CPUs, sockets, memory),
    # under the name localhost.
    local hardware
    hardware=$(slurmd -C | head -n 1 | sed -E 's/^NodeName=[^ ]+ //; s/ UpTime=.*//')
    local partitions=("$@")
    [[ ${#partitions[@]} == 0 ]] && partitions=(debug)

    wrote_config=true
    {
        echo "$MARKER"
        echo "ClusterName=curvature-test"
        echo "SlurmctldHost=localhost(127.0.0.1)"
        echo "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny"
        echo "SlurmUser=root"
        echo "AuthType=auth/munge"
        echo "StateSaveLocation=$WORK/state"
        echo "SlurmdSpoolDir=$WORK/spool"
        echo "SlurmctldPidFile=$WORK/slurmctld.pid"
        echo "SlurmdPidFile=$WORK/slurmd.pid"
        echo "SlurmctldLogFile=$WORK/log/slurmctld.log"
        echo "SlurmdLogFile=$WORK/log/slurmd.log"
        echo "MailProg=/bin/true"
        echo "MpiDefault=none"
        # No cgroups: processes are tracked by parent id, tasks are not bound.
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "AccountingStorageType=accounting_storage/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core_Memory"
        echo "GresTypes=gpu"
        # squeue reports a finished job for this long; the plugin's squeue
        # status mode needs at least three times its first status delay.
        echo "MinJobAge=900"
        echo "ReturnToService=2"
        echo "TaskProlog=$WORK/task_prolog.sh"
        echo "NodeName=localhost NodeAddr=127.0.0.1 $hardware Gres=gpu:2 State=UNKNOWN"
        local default=YES
        for partition in "${partitions[@]}"; do
            echo "PartitionName=$partition Nodes=localhost Default=$default MaxTime=INFINITE State=UP"
            default=NO
        done
    } >"$SLURM_CONF"
    {
        echo "$MARKER"
        echo "NodeName=localhost Name=gpu File=$WORK/fake_gpus/nvidia[0-1]"
    } >"$GRES_CONF"

    # Runs before each task of each job step. It records the step, and blocks
    # step 0 (the srun step that runs the rule) of the first growth_seed job
    # until the test has cancelled that job.
    cat >"$WORK/task_prolog.sh" <<EOF
#!/bin/sh
comment=\$(scontrol show job --oneliner "\$SLURM_JOB_ID" | grep -o 'Comment=[^ ]*')
echo "\$SLURM_JOB_ID \${SLURM_STEP_ID:-batch} \$comment" >>"$WORK/steps.txt"
case "\$comment" in Comment=rule_growth_seed*) ;; *) exit 0 ;; esac
if [ "\$SLURM_STEP_ID" = 0 ] && mkdir "$WORK/gate" 2>/dev/null; then
    echo "\$SLURM_JOB_ID" >"$WORK/gate/job.tmp"
    mv "$WORK/gate/job.tmp" "$WORK/gate/job"
    waited=0
    while [ ! -e "$WORK/gate/release" ] && [ \$waited -lt $((GATE_LIMIT_S * 5)) ]; do
        sleep 0.2
        waited=\$((waited + 1))
    done
fi
exit 0
EOF
    chmod 755 "$WORK/task_prolog.sh"
    : >"$WORK/steps.txt"
}

start_slurm() {
    slurmctld -D -c >"$WORK/log/slurmctld.out" 2>&1 &
    started_pids+=("$!")
    slurmd -D -N localhost >"$WORK/log/slurmd.out" 2>&1 &
    started_pids+=("$!")
    slurm_started=true
    local state=""
    for _ in $(seq $((DAEMON_START_LIMIT_S * 5))); do
        state=$(sinfo --noheader --nodes=localhost --format=%T 2>/dev/null | head -n 1)
        [[ $state == idle ]] && break
        sleep 0.2
    done
    if [[ $state != idle ]]; then
        tail -n 20 "$WORK/log/slurmctld.log" "$WORK/log/slurmd.log" >&2 || true
        fail "the node is '$state' after ${DAEMON_START_LIMIT_S} s, not idle; logs above."
    fi
    log "slurmctld (pid ${started_pids[-2]}) and slurmd (pid ${started_pids[-1]}) run; node idle"
    sinfo --format="%P %a %D %T %c %m %G"
}

copy_workflow() {
    local destination=$1
    mkdir -p "$destination"
    for path in Snakefile config.yaml presets profiles workflow envs; do
        cp -r "$REPO/$path" "$destination/"
    done
    ln -s "$VENV" "$destination/.venv"
}

cancel_held_job() {
    # Waits until the TaskProlog blocks a growth job's step, then cancels the job.
    for _ in $(seq $((GATE_LIMIT_S * 5))); do
        [[ -s $WORK/gate/job ]] && break
        kill -0 "$snakemake_pid" 2>/dev/null || fail "Snakemake ended before any growth job started."
        sleep 0.2
    done
    [[ -s $WORK/gate/job ]] || fail "no growth job reached its srun step within ${GATE_LIMIT_S} s."
    killed_job=$(cat "$WORK/gate/job")
    local state
    state=$(squeue --noheader --jobs="$killed_job" --format=%T)
    [[ $state == RUNNING ]] || fail "held job $killed_job is '$state', expected RUNNING."
    squeue --noheader --steps --jobs="$killed_job" --format=%i | grep -qx "$killed_job.0" ||
        fail "held job $killed_job shows no step 0 in squeue --steps."
    log "cancelling SLURM job $killed_job while its step 0 runs on the node"
    scancel "$killed_job"
    touch "$WORK/gate/release"
}

install_slurm
PATH=$PATH:/usr/sbin
WORK=$(mktemp -d /tmp/slurm-test.XXXXXX)
chmod 755 "$WORK"
copy_workflow "$WORK/local_run"
copy_workflow "$WORK/slurm_run"
mapfile -t partitions < <("$VENV/bin/python" "$REPO/tests/slurm/slurm_checks.py" \
    prepare-profile "$WORK/slurm_run/profiles/slurm")

start_munge
write_slurm_config "${partitions[@]}"
start_slurm

log "local run of $PRESET"
local_start=$SECONDS
# Targets first: --configfile would take the words after it as more config files.
(cd "$WORK/local_run" && .venv/bin/snakemake "${TARGETS[@]}" --cores 2 --configfile "$PRESET") \
    >"$WORK/log/local_run.log" 2>&1 || {
    tail -n 40 "$WORK/log/local_run.log" >&2
    fail "the local run failed; its log is above."
}
log "local run done in $((SECONDS - local_start)) s"

log "SLURM run of $PRESET through profiles/slurm"
slurm_start=$SECONDS
# squeue status mode: accounting is off here, so sacct has nothing to report.
# --slurm-no-account has no effect in plugin 2.8.0 (the account stays unset
# because the profile copy names none) and states the intent for later versions.
(cd "$WORK/slurm_run" && exec .venv/bin/snakemake "${TARGETS[@]}" \
    --workflow-profile profiles/slurm --configfile "$PRESET" \
    --slurm-status-command squeue --slurm-no-account \
    --slurm-init-seconds-before-status-checks 2 --slurm-keep-successful-logs) \
    >"$WORK/log/slurm_run.log" 2>&1 &
snakemake_pid=$!
cancel_held_job
status=0
wait "$snakemake_pid" || status=$?
snakemake_pid=""
if [[ $status != 0 ]]; then
    tail -n 60 "$WORK/log/slurm_run.log" >&2
    fail "the SLURM run failed (exit status $status); its log is above."
fi
log "SLURM run done in $((SECONDS - slurm_start)) s"

"$VENV/bin/python" "$REPO/tests/slurm/slurm_checks.py" check-jobs \
    --snakemake-log "$WORK/log/slurm_run.log" --steps "$WORK/steps.txt" \
    --killed "$killed_job" --expected-submissions "$EXPECTED_SUBMISSIONS" \
    --profile "$WORK/slurm_run/profiles/slurm/config.yaml"
"$VENV/bin/python" "$REPO/tests/slurm/slurm_checks.py" compare \
    "$WORK/local_run/results/slurm_test" "$WORK/slurm_run/results/slurm_test"
log "PASSED in $((SECONDS - start_seconds)) s"
