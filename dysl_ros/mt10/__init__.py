"""Meta-World MT10, the simulated robot of this project: the tasks, their instructions and episode
seeds (``tasks``), and one task as an environment (``env``). Training records demonstrations with
it, ``sim_bridge`` serves it over ROS and ``dysl_bench closed-loop`` evaluates in it.
"""
