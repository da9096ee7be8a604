"""Performance benchmarks: each measures our code and a bare baseline side by side, interleaved, and prints the
median ratio with its target. Not tests: nothing here asserts on time.

    make bench                      # all five, then a summary table (python -m bench)
    python -m bench.train_speed     # one of them: train_speed, packing, generate_speed, ratio_grid, merge_memory
"""
