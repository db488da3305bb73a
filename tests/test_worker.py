"""The worker boundary: student code runs only there, and only plain data comes back."""
import os
import struct
import time

import pytest
import torch

from autograder import sandbox
from autograder.client import RemoteObject, StudentError, StudentProxy, WorkerClient, WorkerFailure

STUDENT = '''
import os, sys, time, io, struct, pickle
import torch

def add(a, b):
    return a + b

def hang():
    while True:
        pass

def exit_hard():
    os._exit(3)

def exit_soft():
    raise SystemExit(0)

def interrupt():
    raise KeyboardInterrupt

def my_pid():
    return os.getpid()

def environment():
    return dict(os.environ)

class Weird(torch.Tensor):
    pass

def subclass():
    return torch.zeros(3).as_subclass(Weird)

class Liar:
    def __eq__(self, other):
        return True

def liar():
    return Liar()

def evil_frame():
    """Write a pickle that runs code on load straight onto the reply pipe."""
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch /tmp/grader-was-pwned",))
    data = pickle.dumps({"ok": True, "value": Boom()})
    os.write(int(sys.argv[2]), struct.pack(">Q", len(data)) + data)
    time.sleep(5)

def allocate(gib):
    return torch.empty(int(gib * 2**30), dtype=torch.uint8).fill_(1).sum()

def shout(n):
    sys.stdout.write("x" * n)
    sys.stdout.flush()
    return n
'''


@pytest.fixture(scope="module")
def student():
    with WorkerClient([("cell", STUDENT)], sandbox.Limits(call_timeout_s=3)) as client:
        yield StudentProxy(client)


def test_calls_return_plain_tensors(student):
    out = student.add(torch.ones(2), torch.arange(2.0))
    assert type(out) is torch.Tensor and out.tolist() == [1.0, 2.0]


def test_worker_is_another_process_with_a_scrubbed_environment(student, monkeypatch):
    assert student.my_pid() != os.getpid()
    env = student.environment()
    # bubblewrap: the sandbox's own tmpfs; basic mode: a fresh temporary directory
    assert env["HOME"] == "/sandbox" or env["HOME"].startswith(("/tmp", os.environ.get("TMPDIR", "/tmp")))
    assert not any(k in env for k in ("VIRTUAL_ENV", "PYTHONPATH", "SSH_AUTH_SOCK", "GITHUB_TOKEN"))
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_student_exceptions_come_back_as_messages(student):
    with pytest.raises(StudentError, match="SystemExit"):
        student.exit_soft()
    with pytest.raises(StudentError, match="KeyboardInterrupt"):
        student.interrupt()
    assert student.add(1, 2) == 3  # the worker survived both


def test_infinite_loop_times_out_and_the_worker_restarts(student):
    start = time.monotonic()
    with pytest.raises(WorkerFailure, match="timed out"):
        student.hang()
    assert time.monotonic() - start < 10
    assert student.add(2, 2) == 4


def test_hard_exit_is_a_crash_and_the_worker_restarts(student):
    with pytest.raises(WorkerFailure, match="exited with status 3"):
        student.exit_hard()
    assert student.add(1, 1) == 2


def test_tensor_subclass_and_custom_eq_do_not_cross(student):
    assert isinstance(student.subclass(), RemoteObject)
    liar = student.liar()
    assert isinstance(liar, RemoteObject) and not (liar == 1)


def test_pickle_payload_on_the_pipe_is_refused(student):
    if os.path.exists("/tmp/grader-was-pwned"):
        os.unlink("/tmp/grader-was-pwned")
    with pytest.raises(WorkerFailure, match="not in torch.save's format"):
        student.evil_frame()
    assert not os.path.exists("/tmp/grader-was-pwned")
    assert student.add(1, 1) == 2


def test_memory_blow_up_is_contained(student):
    with pytest.raises((WorkerFailure, StudentError)):
        student.allocate(12)
    assert student.add(1, 1) == 2


def test_large_output_is_bounded(student):
    with pytest.raises((WorkerFailure, StudentError)):
        student.shout(100 * 2**20)  # file-size limit on the captured stdout
    assert student.add(1, 1) == 2


def test_load_failure_is_not_retried_for_every_call():
    with WorkerClient([("cell", "while True:\n    pass\n")], sandbox.Limits(load_timeout_s=2)) as client:
        student = StudentProxy(client)
        with pytest.raises(WorkerFailure, match="timed out"):
            student.anything()
        start = time.monotonic()
        with pytest.raises(WorkerFailure):
            student.anything_else()
        assert time.monotonic() - start < 1


def test_op_counting_sees_forbidden_ops():
    cells = [("c", "import torch\nfrom torchvision.ops import nms\ndef f(b, s):\n    return nms(b, s, 0.5)\n")]
    with WorkerClient(cells) as client:
        boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
        result = StudentProxy(client).call("f", boxes, torch.tensor([0.9, 0.8, 0.7]), count_ops=True, watch=["torchvision.ops.nms"])
    assert result.value.tolist() == [0, 2]
    assert result.ops.get("torchvision::nms") == 1
