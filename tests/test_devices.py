"""GPU slot claims without a GPU: fake device counts and competing processes."""

import fcntl
import logging
import logging.handlers
import multiprocessing
import os
import signal
import socket

import pytest
import torch

from transformer_curvature import devices

# Fork keeps the children cheap (no second torch import) and lets them use
# the test's monkeypatched functions.
FORK = multiprocessing.get_context("fork")
HOST = devices._safe_name(socket.gethostname())


@pytest.fixture(autouse=True)
def no_held_slots():
    """Start and end each test with no slot held by this process."""
    devices.release_gpu_slots()
    yield
    devices.release_gpu_slots()


@pytest.fixture
def fake_gpus(monkeypatch):
    """Make PyTorch report `count` GPUs; returns a setter."""

    def set_count(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", devices.SLOT_DIR_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    return set_count


def lock_as_other_job(lock_path):
    """Hold an exclusive lock on `lock_path` the way another job's process would."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def forget_parent_slots():
    """Close a forked child's copies of the parent's lock files.

    A forked child shares the parent's open lock files, and a lock stays held
    until every copy is closed. The parent's own copies keep its locks.
    """
    devices.release_gpu_slots()


def hold_slot_until_released(gpu_ids, slot_dir, claimed, release):
    """Child process: claim a slot, report its index, keep it until `release` is set."""
    forget_parent_slots()
    slot = devices.claim_gpu_slot(gpu_ids, slot_dir, timeout_seconds=0)
    claimed.put(slot.index)
    release.wait()


def claim_after_waiting(gpu_ids, slot_dir, events):
    """Child process: claim a slot with no timeout, forwarding log records to `events`."""
    forget_parent_slots()
    handler = logging.handlers.QueueHandler(events)
    devices.logger.addHandler(handler)
    devices.logger.setLevel(logging.INFO)
    slot = devices.claim_gpu_slot(gpu_ids, slot_dir, poll_seconds=0.01)
    devices.logger.removeHandler(handler)
    events.put(("claimed", slot.index))


def claim_and_stop(gpu_ids, slot_dir, claimed):
    """Child process: claim a slot, report it, then stop until killed."""
    forget_parent_slots()
    devices.claim_gpu_slot(gpu_ids, slot_dir, timeout_seconds=0)
    claimed.put(os.getpid())
    signal.pause()


def test_resolve_device_cpu_setting_ignores_gpus(fake_gpus, tmp_path):
    fake_gpus(4)
    assert devices.resolve_device("cpu", tmp_path) == torch.device("cpu")
    assert not list(tmp_path.iterdir())


def test_resolve_device_auto_without_gpu(fake_gpus, tmp_path):
    fake_gpus(0)
    assert devices.resolve_device("auto", tmp_path) == torch.device("cpu")


def test_resolve_device_cuda_without_gpu_raises(fake_gpus, tmp_path):
    fake_gpus(0)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        devices.resolve_device("cuda", tmp_path)


def test_resolve_device_unknown_setting_raises(fake_gpus, tmp_path):
    fake_gpus(1)
    with pytest.raises(ValueError, match="'gpu'"):
        devices.resolve_device("gpu", tmp_path)


def test_resolve_device_claims_first_free_gpu(fake_gpus, tmp_path):
    fake_gpus(3)
    other_job = lock_as_other_job(tmp_path / HOST / "gpu-0.lock")

    device = devices.resolve_device("auto", tmp_path)

    assert device == torch.device("cuda", 1)
    assert (tmp_path / HOST / "gpu-1.lock").exists()
    other_job.close()


def test_resolve_device_same_gpu_on_second_call(fake_gpus, tmp_path):
    fake_gpus(2)
    first = devices.resolve_device("cuda", tmp_path)
    second = devices.resolve_device("cuda", tmp_path)
    assert first == second == torch.device("cuda", 0)
    assert len(devices._held_slots) == 1


def test_resolve_device_slot_dir_from_environment(fake_gpus, monkeypatch, tmp_path):
    fake_gpus(2)
    monkeypatch.setenv(devices.SLOT_DIR_VARIABLE, str(tmp_path / "shared"))
    devices.resolve_device("cuda")
    assert (tmp_path / "shared" / HOST / "gpu-0.lock").exists()


def test_choose_single_visible_gpu_takes_no_lock(tmp_path):
    environ = {"CUDA_VISIBLE_DEVICES": "3"}
    assert devices.choose_gpu_index(tmp_path, environ, device_count=1) == 0
    assert not list(tmp_path.iterdir())
    assert devices._held_slots == []


def test_choose_under_slurm_single_gpu_takes_no_lock(tmp_path):
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0"}
    assert devices.choose_gpu_index(tmp_path, environ, device_count=1) == 0
    assert not list(tmp_path.iterdir())


def test_choose_under_slurm_locks_per_job(tmp_path):
    """Two SLURM jobs on one node may both see their GPUs as 0 and 1."""
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "0,1"}
    local_run = lock_as_other_job(tmp_path / HOST / "gpu-0.lock")
    other_slurm_job = lock_as_other_job(tmp_path / HOST / "slurm-7" / "gpu-0.lock")

    index = devices.choose_gpu_index(tmp_path, environ, device_count=2)

    assert index == 0
    assert devices._held_slots[0].lock_path == tmp_path / HOST / "slurm-42" / "gpu-0.lock"
    local_run.close()
    other_slurm_job.close()


def test_choose_lock_names_follow_cuda_visible_devices(tmp_path):
    """Physical GPU 5 keeps its lock under whichever index a run addresses it."""
    other_run = lock_as_other_job(tmp_path / HOST / "gpu-5.lock")
    environ = {"CUDA_VISIBLE_DEVICES": "5,2"}

    index = devices.choose_gpu_index(tmp_path, environ, device_count=2)

    assert index == 1
    assert devices._held_slots[0].gpu_id == "2"
    other_run.close()


def test_choose_without_visible_gpu_raises(tmp_path):
    with pytest.raises(ValueError, match="No GPU is visible"):
        devices.choose_gpu_index(tmp_path, {"CUDA_VISIBLE_DEVICES": ""}, device_count=0)


def test_visible_gpu_ids_table():
    cases = [
        ({}, 3, ["0", "1", "2"]),
        ({"CUDA_VISIBLE_DEVICES": "2,0"}, 2, ["2", "0"]),
        ({"CUDA_VISIBLE_DEVICES": " 1 , 3 "}, 2, ["1", "3"]),
        # CUDA ignores the entries after the first invalid one.
        ({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, 1, ["1"]),
        ({"CUDA_VISIBLE_DEVICES": "GPU-8f3e,GPU-77aa"}, 2, ["GPU-8f3e", "GPU-77aa"]),
        ({"CUDA_VISIBLE_DEVICES": ""}, 0, []),
    ]
    for environ, count, expected in cases:
        assert devices.visible_gpu_ids(environ, count) == expected, environ


def test_claim_slot_name_is_file_safe(tmp_path):
    slot = devices.claim_gpu_slot(["MIG-1/2:3"], tmp_path)
    assert slot.lock_path == tmp_path / "gpu-MIG-1_2_3.lock"


def test_claim_empty_gpu_list_raises(tmp_path):
    with pytest.raises(ValueError, match="no GPU to claim"):
        devices.claim_gpu_slot([], tmp_path)


def test_claim_all_taken_times_out(tmp_path):
    devices.claim_gpu_slot(["0"], tmp_path)
    devices.claim_gpu_slot(["1"], tmp_path)
    with pytest.raises(devices.GpuSlotTimeout, match="--resources gpu=2"):
        devices.claim_gpu_slot(["0", "1"], tmp_path, timeout_seconds=0)


def test_release_frees_slot(tmp_path):
    devices.claim_gpu_slot(["0"], tmp_path)
    devices.release_gpu_slots()
    slot = devices.claim_gpu_slot(["0"], tmp_path, timeout_seconds=0)
    assert slot.index == 0


def test_competing_processes_get_distinct_gpus(tmp_path):
    gpu_ids = ["0", "1", "2", "3"]
    claimed = FORK.Queue()
    release = FORK.Event()
    children = [
        FORK.Process(target=hold_slot_until_released, args=(gpu_ids, tmp_path, claimed, release))
        for _ in gpu_ids
    ]
    for child in children:
        child.start()
    try:
        indices = sorted(claimed.get(timeout=60) for _ in children)
        assert indices == [0, 1, 2, 3]
        with pytest.raises(devices.GpuSlotTimeout):
            devices.claim_gpu_slot(gpu_ids, tmp_path, timeout_seconds=0)
    finally:
        release.set()
        for child in children:
            child.join(timeout=60)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]

    slot = devices.claim_gpu_slot(gpu_ids, tmp_path, timeout_seconds=0)
    assert slot.index == 0


def test_waiting_process_gets_released_gpu(tmp_path):
    gpu_ids = ["0", "1"]
    devices.claim_gpu_slot(["0"], tmp_path)
    devices.claim_gpu_slot(["1"], tmp_path)
    events = FORK.Queue()
    child = FORK.Process(target=claim_after_waiting, args=(gpu_ids, tmp_path, events))
    child.start()
    try:
        record = events.get(timeout=60)
        assert "waiting" in record.getMessage()

        held = {slot.gpu_id: slot for slot in devices._held_slots}
        held["1"].handle.close()
        devices._held_slots.remove(held["1"])

        record = events.get(timeout=60)
        assert record.getMessage().startswith("claimed GPU 1 as cuda:1")
        assert events.get(timeout=60) == ("claimed", 1)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


def test_killed_process_frees_its_gpu(tmp_path):
    claimed = FORK.Queue()
    child = FORK.Process(target=claim_and_stop, args=(["0"], tmp_path, claimed))
    child.start()
    try:
        assert claimed.get(timeout=60) == child.pid
        with pytest.raises(devices.GpuSlotTimeout):
            devices.claim_gpu_slot(["0"], tmp_path, timeout_seconds=0)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL

    slot = devices.claim_gpu_slot(["0"], tmp_path, timeout_seconds=0)
    assert slot.index == 0
    assert slot.lock_path.read_text().split() == [socket.gethostname(), str(os.getpid())]
