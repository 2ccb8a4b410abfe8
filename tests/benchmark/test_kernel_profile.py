"""kernel_profile: perf samples attributed to the right Relax kernel (unnamed parallel bodies included), the
VM's call counts, generic inputs, and one real profile of the tiny artifact when perf can sample here."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harmonizer_deploy.benchmark import kernel_profile as kp
from harmonizer_deploy.core.errors import HarmonizerError

NM = """\
                 U TVMBackendParallelLaunch
0000000000001000 T __tvm_ffi_fused_conv_add
0000000000001200 t fused_conv_add_compute_
0000000000002000 t fused_softmax_compute_
0000000000003000 d _DYNAMIC
"""

REPORT = """\
# header line
 300        |model.so                                         |[.] 0x0000000000001a00
 100        |model.so                                         |[.] 0x0000000000001210
  50        |model.so                                         |[.] 0x0000000000002004
  20        |model.so                                         |[.] fused_softmax_compute_
  40        |libtvm_runtime.so                                |[.] TVMBackendFreeWorkspace
  10        |[kernel.kallsyms]                                |[k] do_sched_yield
"""

VM_TEXT = """\
@main:
  call  vm.builtin.alloc_storage in: %vm, c[2], i0, c[3], c[4] dst: %101
  call  fused_conv_add in: %0, %1, %102 dst: %void
  call  fused_conv_add in: %102, %1, %103 dst: %void
  call  fused_softmax in: %103, %104 dst: %void
  ret   %104
@main_transform_params:
  call  fused_conv_add in: %0, %1, %2 dst: %void
"""


def test_addresses_after_a_compute_symbol_belong_to_its_kernel():
    ranges = kp.kernel_ranges(NM)
    assert [name for _, name in ranges] == ["__tvm_ffi_fused_conv_add", "fused_conv_add", "fused_softmax"]
    assert kp.kernel_of(0x1a00, ranges) == "fused_conv_add"  # the unnamed parallel body after compute_
    assert kp.kernel_of(0x2004, ranges) == "fused_softmax"
    assert kp.kernel_of(0x10, ranges) == "?"


def test_samples_split_between_kernels_and_the_rest():
    kernels, other = kp.attribute(kp.parse_perf_report(REPORT), "model.so", kp.kernel_ranges(NM))
    assert kernels == {"fused_conv_add": 400, "fused_softmax": 70}
    assert other == {"libtvm_runtime.so: TVMBackendFreeWorkspace": 40, "[kernel.kallsyms]: do_sched_yield": 10}


def test_calls_are_counted_in_main_only_without_vm_builtins():
    assert kp.calls_per_run(VM_TEXT) == {"fused_conv_add": 2, "fused_softmax": 1}


def test_feeds_follow_the_manifest_for_any_signature():
    inputs = [{"name": "tokens", "dtype": "int64", "shape": ["n", 5]}, {"name": "scale", "shape": [2]}]
    feeds = kp.feeds_for(inputs, {"n": 3})
    assert feeds["tokens"].shape == (3, 5) and feeds["tokens"].dtype == "int64"
    assert feeds["scale"].shape == (2,) and feeds["scale"].dtype == "float32"
    with pytest.raises(HarmonizerError, match="symbolic dim 'n'") as raised:
        kp.feeds_for(inputs, {})
    assert "--dim n=N" in raised.value.fix


def _perf_can_sample() -> bool:
    perf = shutil.which("perf")
    if perf is None:
        return False
    probe = subprocess.run([perf, "stat", "-e", "task-clock", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.slow
def test_profile_of_the_tiny_artifact_names_its_kernels(built):
    if not _perf_can_sample():
        pytest.skip("perf is not installed or may not sample here")
    result = kp.profile(built / "cpu", {"batch": 2, "time": 16}, calls=20)
    names = [k["name"] for k in result["kernels"]]
    assert result["samples"] > 0 and names
    called = [k for k in result["kernels"] if k["calls_per_run"]]
    assert called, names  # the hot kernels are ones main calls
    assert sum(k["share"] for k in result["kernels"]) + sum(o["share"] for o in result["other"]) == pytest.approx(1)
    assert "calls per run" in kp.markdown(result)
