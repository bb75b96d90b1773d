"""Architecture specs for the HuggingFace causal LMs beyond core's GPT-2 and Llama family."""
