"""Using a trained model: the VoCo cache (compress once, answer many questions),
reference greedy decoding, and what answering costs (FLOPs, latency, Table 7)."""

from vocolab.inference.answering import answer, answer_texts, text_logits
from vocolab.inference.cache import VoCoCache
from vocolab.inference.compression import compress, compress_frame, compress_video, full_cache
from vocolab.inference.flops import analytic_flops, measured_flops
from vocolab.inference.generate import greedy_generate
from vocolab.inference.table7 import inference_costs

__all__ = ["VoCoCache", "analytic_flops", "answer", "answer_texts", "compress", "compress_frame", "compress_video",
           "full_cache", "greedy_generate", "inference_costs", "measured_flops", "text_logits"]
