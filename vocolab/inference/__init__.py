"""Using a trained model: the VoCo cache (compress once, answer many questions),
reference greedy decoding, and what answering costs (FLOPs, latency, Table 7)."""
