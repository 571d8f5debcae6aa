"""The sampler as an OptunaHub package, loaded from this repository's registry folder.

Run from the repository root (``registry_root`` is relative to it).
"""

import optunahub

module = optunahub.load_local_module(package="samplers/llm_sampler", registry_root="package")
sampler = module.LLMSampler(description="...", seed=0)
print(type(sampler).__name__)
