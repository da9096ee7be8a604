"""Issue 24's five classes of bad input, each refused by a rule (docs/errors.md), on test_bad_input.py's harness:
GPU settings on a machine without one, a store path where no directory can be made, inf / nan, files that are not
what their names say, keys nothing reads. Every case is refused in one line before any stage; the store is absent.

    pytest tests/test_bad_input_classes.py
"""
from __future__ import annotations

import pytest
from test_bad_input import assert_refused, run_battery

# a CPU machine with vLLM installed: GPUs hidden, and a stand-in vllm package that find_spec finds (the checks
# refuse before anything imports it)
NO_GPU = {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": "{d}/stand_in_vllm"}
CASES = [
    # GPU settings on a machine without a GPU: forgetting/machine.py
    ("vllm_gpu_config_on_cpu", ["method=cfs", "generator=vllm"], NO_GPU, "generator=vllm_cpu"),
    ("vllm_gpu_memory_on_cpu", ["method=cs", "generator=vllm", "generator.gpu_memory_utilization=1.0"], NO_GPU,
     "generator.gpu_memory_utilization=1.0"),
    ("vllm_tensor_parallel_on_cpu", ["method=cfs", "generator=vllm_cpu", "generator.tensor_parallel_size=64"], NO_GPU,
     "generator.tensor_parallel_size=64"),
    ("cuda_without_gpu", ["device=cuda"], NO_GPU, "device='cuda'"),
    ("deepspeed_cuda_without_gpu", ["deepspeed=zero3", "device=cuda", "trainer.num_processes=2"], NO_GPU,
     "device='cuda'"),
    ("cuda_index_without_gpu", ["method=l2", "device=cuda:1"], NO_GPU, "device='cuda:1'"),
    ("device_unknown", ["device=gpu"], {}, "device='gpu'"),
    # a store path whose parent passes access() but refuses mkdir (as root: /proc, /sys)
    ("store_under_proc", ["store_dir=/proc/forgetting_store"], {}, "store_dir='/proc/forgetting_store'"),
    ("store_under_sys", ["store_dir=/sys/forgetting_store/deeper"], {}, "store_dir='/sys/forgetting_store/deeper'"),
    ("store_under_sys_kernel", ["store_dir=/sys/kernel/forgetting_store"], {}, "/sys/kernel/forgetting_store"),
    # inf / nan where a finite range is meant (tests/test_finite.py walks every float knob)
    ("temperature_inf", ["method=cfs", "generator.temperature=inf"], {}, "generator.temperature=inf"),
    ("lr_inf", ["trainer.lr=inf"], {}, "trainer.lr=inf"),
    ("ratio_inf", ["method=cfs", "method.ratio=inf"], {}, "method.ratio=inf"),
    ("weight_decay_nan", ["trainer.weight_decay=nan"], {}, "trainer.weight_decay=nan"),
    ("robust_noise_inf", ["eval.robust_noise=[0.01,inf]"], {}, "eval.robust_noise=inf"),
    ("pretrain_rho_inf", ["model.pretrain.rho=inf"], {}, "model.pretrain.rho=inf"),
    # files that are not what their names say
    ("gguf_not_gguf", ["model.source=gguf", "model.path={d}/text.gguf"], {}, "text.gguf"),
    ("safetensors_not_safetensors", ["model.source=hf", "model.path={d}/bad_weights", "dataset=jsonl",
                                     "dataset.path={d}/good.jsonl"], {}, "bad_weights/model.safetensors"),
    ("parquet_not_parquet", ["dataset=jsonl", "dataset.path={d}/text.parquet"], {}, "text.parquet"),
    ("gz_not_gzip", ["dataset=jsonl", "dataset.path={d}/plain.jsonl.gz"], {}, "plain.jsonl.gz"),
    ("corpus_gz_not_gzip", ["model.midtrain.steps=2", "model.midtrain.corpus={d}/plain.jsonl.gz"], {},
     "plain.jsonl.gz"),
    ("corpus_not_text", ["eval.corpora=[{d}/binary.jsonl]"], {}, "binary.jsonl"),
    ("task_yaml_not_yaml", ["eval.include_path=[{d}/bad_tasks]", "eval.tasks=[my_task]"], {}, "my_task.yaml"),
    # keys nothing reads
    ("unread_top_level_key", ["+seeed=1"], {}, "seeed=1"),
    ("unread_key_anything", ["+anything=1"], {}, "anything=1"),
    ("unread_group_key", ["+method.nope=1"], {}, "method.nope=1"),
    ("unread_nested_key", ["+model.pretrain.lrr=0.1"], {}, "model.pretrain.lrr=0.1"),
    ("unread_dict_key", ["+trainer.nope={{a: 1}}"], {}, "trainer.nope="),
]
pytestmark = pytest.mark.timeout(1800)  # one fixture runs every case: ~10 s each on a loaded 2-core machine


@pytest.fixture(scope="module")
def battery(tmp_path_factory, tiny_olmo) -> dict:
    return run_battery(CASES, tmp_path_factory.mktemp("battery24"), tiny_olmo)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_any_stage(battery, case):
    assert_refused(battery, case)
