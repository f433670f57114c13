"""The planted bugs of scripts/mutants.py: one small, user-visible bug each, and the tests that must catch it.

A mutant's `edits` are (exact text, mutated text) pairs in one file; every text must occur exactly once there
(`mutants.py --check`, run by tests/test_mutants.py, keeps this list in step with the code). `tests` are pytest ids
relative to tests/, kept few and fast: they are what runs for the mutant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    behaviour: str  # the central behaviour it breaks (issue 32's list)
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    bug: str  # what a user would see


def M(name, behaviour, path, edits, tests, bug) -> Mutant:
    return Mutant(name, behaviour, path, tuple(edits), tuple(tests), bug)


DIT_PARITY = "test_dit.py::test_matches_diffusers_with_padded_text"
DIT_T2V = "test_dit.py::test_text_to_video_config_matches_diffusers"
CFG_BATCH = "test_sampling.py::test_a_batch_under_cfg_equals_each_sample_sampled_alone"
SCHEDULE = "test_sampling.py::test_sigmas_and_timesteps_are_diffusers_flow_match_schedule"
LOOP = "test_sampling.py::test_the_sampling_loop_is_diffusers_scheduler_stepping_the_same_model"
VAE_DECODE = "test_vae.py::test_decode_matches_diffusers"
VAE_ENCODE = "test_vae.py::test_encode_matches_diffusers"
VAE_CHUNKS = "test_vae.py::test_chunks_continue_the_one_pass_exactly_when_normalisation_is_frozen"
VAE_NORM = "test_vae.py::test_running_group_norm_reaches_the_whole_clip_statistics"
VAE_STREAM = "test_vae.py::test_stream_yields_the_frames_of_one_shot_decode_in_order"
VAE_MEMORY = "test_vae.py::test_streaming_decode_holds_no_earlier_chunk"
INT8 = "test_quant.py::test_each_int8_branch_computes_the_linear_of_its_int8_weights_and_scales"
FP8 = "test_fp8.py::test_each_fp8_format_loads_dequantized_and_close_to_the_float_model"
FP8_VIEW = "test_fp8.py::test_the_view_hides_scales_and_markers_and_dequantizes_per_channel"
LORA_NATIVE = "test_lora.py::test_stacked_loras_match_comfyui_native_lora_loaders"
LORA_DIFFUSERS = "test_lora.py::test_diffusers_lora_equals_the_same_lora_in_official_names"
LORA_INT8_EXACT = "test_lora.py::test_lora_on_int8_layers_adds_exactly_strength_times_the_low_rank_update"
LAB = "test_long_video.py::test_lab_conversion_gives_the_published_cielab_values"
COLOR = "test_long_video.py::test_color_match_moves_lab_statistics_to_the_prior"
WINDOWS = "test_long_video.py::test_three_windows_continue_the_last_frames_and_get_their_own_prompts"
LONG_MEMORY = "test_long_video.py::test_memory_is_flat_in_the_number_of_windows"
CROP = "test_text.py::test_crop_leaves_exactly_the_prompt_tokens"
JOINT = "test_text.py::test_joint_sequence_mask_and_negative_share_the_image_tokens"

MUTANTS = [
    # -- DiT forward ---------------------------------------------------------------------------------------------
    M("dit-modulate-scale", "DiT forward", "magic141_core/dit/layers.py",
      [("torch.addcmul(shift, x, 1 + scale)", "torch.addcmul(shift, x, scale)")],
      [DIT_PARITY], "adaLN scales by `scale` instead of 1 + scale: every block mis-modulated"),
    M("dit-rope-sign", "DiT forward", "magic141_core/dit/attention.py",
      [("rotated = torch.stack([-x1, x0], dim=-1).flatten(-2)", "rotated = torch.stack([x1, -x0], dim=-1).flatten(-2)")],
      [DIT_PARITY], "RoPE rotates the wrong way: positions mirrored"),
    M("dit-rope-text-rotated", "DiT forward", "magic141_core/dit/attention.py",
      [("text = torch.zeros(txt_len, angles.shape[1], device=device)",
        "text = torch.ones(txt_len, angles.shape[1], device=device)")],
      [DIT_PARITY], "text tokens get a rotary position they never had in training"),
    M("dit-final-layer-halves", "DiT forward", "magic141_core/dit/blocks.py",
      [("shift, scale = self.adaLN_modulation(vec).unsqueeze(1).chunk(2, dim=-1)",
        "scale, shift = self.adaLN_modulation(vec).unsqueeze(1).chunk(2, dim=-1)")],
      [DIT_PARITY], "final layer reads (scale, shift) in diffusers' order from an official checkpoint"),
    M("dit-guidance-scale", "DiT forward", "magic141_core/dit/model.py",
      [("self.guidance_embedder(guidance.to(x.device) * 1000.0, dtype)",
        "self.guidance_embedder(guidance.to(x.device), dtype)")],
      [DIT_PARITY, DIT_T2V], "guidance embedded as 6 instead of 6000: HunyuanVideo's guidance_in ignored"),
    M("dit-unpatchify-axes", "DiT forward", "magic141_core/dit/model.py",
      [('"b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)"', '"b (t h w) (c pt pw ph) -> b c (t pt) (h ph) (w pw)"')],
      [DIT_PARITY], "output patches transposed inside each 2x2 patch"),
    M("dit-reference-mask", "DiT forward", "magic141_core/dit/model.py",
      [("mask[:, :, :ref_frames] = 1.0", "mask[:, :, :ref_frames + 1] = 1.0")],
      [DIT_PARITY], "the first-frame mask also marks latent frame 1 as the start image"),
    M("dit-refiner-mean-over-padding", "DiT forward", "magic141_core/dit/refiner.py",
      [("((txt.float() * weights).sum(dim=1) / weights.sum(dim=1))", "((txt.float() * weights).sum(dim=1) / txt.shape[1])")],
      [DIT_PARITY], "the token refiner's pooled text averages in the padding: prompt length changes the video"),
    # -- attention masking, batches, CFG --------------------------------------------------------------------------
    M("mask-one-padding-token", "attention masking", "magic141_core/dit/attention.py",
      [("(positions[None] < img_len + num_valid[:, None])", "(positions[None] <= img_len + num_valid[:, None])")],
      [DIT_PARITY], "one padding token visible to every video token"),
    M("mask-skipped-when-any-full", "attention masking (batch > 1)", "magic141_core/dit/attention.py",
      [("if bool((num_valid >= txt_len).all()):", "if bool((num_valid >= txt_len).any()):")],
      [DIT_PARITY, CFG_BATCH], "in a batch, the mask is dropped when one prompt is unpadded: the others see padding"),
    M("mask-unmasked-when-repeated", "attention masking (batch > 1)", "magic141_core/sampling/conditioning.py",
      [("return TextConditioning(*(t.expand(batch, *t.shape[1:]) for t in (self.tokens, self.mask, self.pooled)))",
        "return TextConditioning(self.tokens.expand(batch, -1, -1), torch.ones_like(self.mask).expand(batch, -1), "
        "self.pooled.expand(batch, -1))")],
      [CFG_BATCH], "a prompt shared by several latents loses its padding mask (issue 32's example)"),
    M("cfg-formula", "CFG", "magic141_core/sampling/guidance.py",
      [("v = v_uncond + self.scale * (v_cond - v_uncond)", "v = v_cond + self.scale * (v_cond - v_uncond)")],
      ["test_sampling.py::test_cfg_is_one_batched_forward_per_step_and_matches_two_forwards"],
      "classifier-free guidance extrapolates from the conditional prediction"),
    M("cfg-order", "CFG", "magic141_core/sampling/guidance.py",
      [("self.parts = [cond.negative, cond.positive] if self.cfg else [cond.positive]",
        "self.parts = [cond.positive, cond.negative] if self.cfg else [cond.positive]")],
      ["test_sampling.py::test_cfg_is_one_batched_forward_per_step_and_matches_two_forwards"],
      "CFG guides away from the prompt, towards the negative prompt"),
    M("cfg-reference-batch", "CFG (batch > 1)", "magic141_core/sampling/guidance.py",
      [("reference = torch.cat([reference, reference])", "reference = torch.cat([reference, reference.flip(0)])")],
      [CFG_BATCH], "under CFG, a batch's start images are paired with the wrong samples"),
    # -- schedule, timesteps, sampler step -----------------------------------------------------------------------
    M("schedule-inverted-shift", "schedule", "magic141_core/sampling/schedule.py",
      [("return shift * sigmas / (1 + (shift - 1) * sigmas)", "return sigmas / (shift - (shift - 1) * sigmas)")],
      [SCHEDULE, LOOP], "the shift works backwards (issue 32's example): too little noise removed early"),
    M("schedule-off-by-one", "schedule", "magic141_core/sampling/schedule.py",
      [("sigmas = torch.linspace(1, 0, steps + 1)", "sigmas = torch.linspace(1, 0, steps + 2)[1:]")],
      [SCHEDULE, LOOP], "the first (pure noise) step is skipped"),
    M("timestep-scale", "timesteps", "magic141_core/sampling/guidance.py",
      [("t = (sigma * NUM_TRAIN_TIMESTEPS).expand(batch)", "t = (sigma * (NUM_TRAIN_TIMESTEPS - 1)).expand(batch)")],
      [LOOP], "timesteps 0.1 % off (999 scale): the model sees the wrong noise level"),
    M("euler-sign", "sampler step", "magic141_core/sampling/euler.py",
      [("x = x + v * (sigma_next - sigma)", "x = x + v * (sigma - sigma_next)")],
      ["test_sampling.py::test_euler_step_is_the_official_update", LOOP], "the ODE is integrated backwards"),
    M("euler-preview", "sampler step", "magic141_core/sampling/euler.py",
      [("denoised = x - sigma * v", "denoised = x + sigma * v")],
      ["test_sampling.py::test_euler_step_is_the_official_update"], "previews show a wrong clean-image estimate"),
    M("noise-seed", "sampler step", "magic141_core/sampling/sampler.py",
      [("noise = make_noise(shape, seed).to(device_of(model))", "noise = make_noise(shape, seed + 1).to(device_of(model))")],
      [LOOP], "the seed shown is not the seed used"),
    # -- VAE ------------------------------------------------------------------------------------------------------
    M("vae-conv-forgets-chunk", "VAE chunk continuity", "magic141_core/vae/causal.py",
      [("past = state.get(self) if state is not None and self.time_pad else None", "past = None")],
      [VAE_CHUNKS], "causal convolutions forget the previous chunk: a jump every chunk (issue 32's example)"),
    M("vae-groupnorm-running-off", "VAE GroupNorm statistics", "magic141_core/vae/causal.py",
      [("        past = state.get(self)\n        # this chunk", "        past = None\n        # this chunk")],
      [VAE_NORM], "each chunk normalised alone: brightness steps at chunk borders (issue 32's example)"),
    M("vae-groupnorm-merge", "VAE GroupNorm statistics", "magic141_core/vae/causal.py",
      [("merged_m2 = m2_0 + var * count + delta.square() * count0 * count / total",
        "merged_m2 = m2_0 + var * count")],
      [VAE_NORM], "the running variance ignores how far the chunk means are apart"),
    M("vae-posterior-std", "VAE encode", "magic141_core/vae/latent.py",
      [("return torch.exp(0.5 * self.logvar)", "return torch.exp(self.logvar)")],
      [VAE_ENCODE], "the reference latent is sampled with the variance as its spread"),
    M("vae-unit-range", "VAE decode", "magic141_core/vae/streaming.py",
      [("return pixels.mul_(0.5).add_(0.5).clamp_(0.0, 1.0)", "return pixels.mul_(0.5).add_(0.45).clamp_(0.0, 1.0)")],
      [VAE_DECODE], "every frame 5 % darker"),
    M("vae-chunk-spans", "VAE chunk continuity", "magic141_core/vae/tiling.py",
      [("return [(0, chunk + 1)] + [", "return [(0, chunk)] + [")],
      [VAE_STREAM], "latent frame `chunk` never decoded: 4 black frames after the first chunk"),
    M("vae-scaling-factor", "VAE latent scale", "magic141_core/vae/latent.py",
      [("SCALING_FACTOR = 0.476986", "SCALING_FACTOR = 0.18215")],
      ["test_vae.py::test_scaling_helpers_are_inverse_and_use_the_hunyuan_factor"],
      "SD's latent scale: the DiT sees latents 2.6x too small"),
    # -- int8 and fp8 ---------------------------------------------------------------------------------------------
    M("int8-dequant-scale", "int8 (dequantize branch)", "magic141_core/weights/int8.py",
      [("y = F.linear(x.to(dtype), self.qweight.dequantize().to(dtype), bias)",
        "y = F.linear(x.to(dtype), (1.5 * self.qweight.dequantize()).to(dtype), bias)")],
      [INT8], "weights 1.5x too large on CPUs without bf16 units (issue 32's example)"),
    M("int8-kernel-bias", "int8 (kernel branch)", "magic141_core/weights/int8.py",
      [("y = F.linear(x.to(dtype), self.qweight, bias)  # quanto", "y = F.linear(x.to(dtype), self.qweight, None)  # quanto")],
      [INT8], "biases dropped on GPUs and CPUs with bf16 units"),
    M("fp8-scale-ignored", "fp8", "magic141_core/weights/fp8.py",
      [("    if scale is None:\n        return out\n    return out.mul_(", "    if True:\n        return out\n    return out.mul_(")],
      [FP8], "scaled fp8 weights loaded without their scale"),
    M("fp8-per-channel-axis", "fp8", "magic141_core/weights/fp8.py",
      [("scale.reshape(-1, *[1] * (out.ndim - 1))", "scale.reshape(*[1] * (out.ndim - 1), -1)")],
      [FP8_VIEW], "per-channel fp8 scales applied along the input axis"),
    # -- LoRA -----------------------------------------------------------------------------------------------------
    M("lora-rank", "LoRA merge", "magic141_core/weights/lora.py",
      [("scale = _alpha(raw, keys[\"alpha\"], name) / down.shape[0] if \"alpha\" in keys else 1.0",
        "scale = _alpha(raw, keys[\"alpha\"], name) if \"alpha\" in keys else 1.0")],
      [LORA_NATIVE], "LoRA alpha not divided by the rank: a LoRA r times too strong"),
    M("lora-negative-strength", "LoRA merge", "magic141_core/weights/lora.py",
      [("            update = strength * delta.matrix(linear.out_features)\n            weight.copy_(",
        "            update = abs(strength) * delta.matrix(linear.out_features)\n            weight.copy_(")],
      [LORA_NATIVE], "a negative LoRA strength adds the LoRA instead of subtracting it"),
    M("lora-swap-halves", "LoRA merge", "magic141_core/weights/lora.py",
      [("            delta = torch.cat(delta.chunk(2)[::-1])", "            delta = delta")],
      [LORA_DIFFUSERS], "diffusers LoRAs on norm_out shift where they should scale"),
    M("lora-int8-branch", "LoRA merge (int8)", "magic141_core/weights/lora.py",
      [("y = (strength * delta.scale) * ((x @ down.T) @ up.T)", "y = (strength / delta.scale) * ((x @ down.T) @ up.T)")],
      [LORA_INT8_EXACT], "a LoRA on an int8 model at the wrong strength (alpha / r inverted)"),
    M("lora-int8-halves", "LoRA merge (int8)", "magic141_core/weights/lora.py",
      [("            y = torch.cat(y.chunk(2, dim=-1)[::-1], dim=-1)", "            y = y")],
      [LORA_INT8_EXACT], "a diffusers LoRA on an int8 model shifts norm_out where it should scale"),
    # -- colour match, seams, long-video memory ------------------------------------------------------------------
    M("lab-white-point", "colour match", "magic141_core/video/color.py",
      [("_WHITE = torch.tensor([0.95047, 1.0, 1.08883])", "_WHITE = torch.tensor([0.96422, 1.0, 0.82521])")],
      [LAB], "CIELAB with the D50 white: every seam's colour matched in a shifted space"),
    M("color-match-no-op", "colour match", "magic141_core/video/color.py",
      [("dest.copy_(lab_to_rgb(lab + strength * (matched - lab)))", "dest.copy_(frame)")],
      [COLOR, WINDOWS], "the drift guard does nothing: colours wander over a minute (issue 32's example)"),
    M("long-color-match-off", "colour match", "magic141_core/video/long_video.py",
      [("return match_color(self.context, self.color_anchor)", "return self.context")],
      [WINDOWS], "Long Video's color_match option ignored"),
    M("seam-frame-kept", "seam handling", "magic141_core/video/long_video.py",
      [("new = frames[plan.dropped(k):]", "new = frames[0:]")],
      [WINDOWS], "the context frames written again at every window: a stutter"),
    M("seam-wrong-frame", "seam handling", "magic141_core/video/long_video.py",
      [("context = torch.cat([self.context, frames])[-plan.context(self.window + 1):]",
        "context = torch.cat([self.context, frames])[-plan.context(self.window + 1) - 1:-1]")],
      [WINDOWS], "the next window continues from one frame too early: a jump back at every seam"),
    M("long-keeps-frames", "long-video memory", "magic141_core/video/long_video.py",
      [("        write(new)\n", "        write(new)\n        settings.__dict__.setdefault('kept', []).append((frames, latent))\n")],
      [LONG_MEMORY], "every window's frames and latent kept forever (issue 32's example: 127 MB per 540p window)"),
    M("stream-keeps-chunks", "streaming decode memory", "magic141_core/vae/streaming.py",
      [("        yield to_unit_range(frames)\n", "        vae.__dict__.setdefault('kept', []).append(frames)\n        yield to_unit_range(frames)\n")],
      [VAE_MEMORY], "the streaming decode keeps every chunk it handed out: memory grows with the clip"),
    M("stream-attention-history", "streaming decode memory", "magic141_core/vae/blocks.py",
      [("keep = min(earlier + T, state.attention_frames) * hw", "keep = (earlier + T) * hw")],
      [VAE_MEMORY], "the mid-block attention keeps every earlier frame: memory grows with the clip"),
    # -- text token layout, image preprocessing ------------------------------------------------------------------
    M("text-crop", "text token layout", "magic141_core/text/encode.py",
      [("return hidden[:, crop:], mask[:, crop:].to(device)", "return hidden[:, crop - 1:-1], mask[:, crop - 1:-1].to(device)")],
      ["test_text.py::test_llm_tokens_are_the_third_from_last_layer_without_final_norm"],
      "the template's last token kept and the prompt's last dropped"),
    M("text-hidden-layer", "text token layout", "magic141_core/text/prompts.py",
      [("LLM_SKIP_LAYERS = 2", "LLM_SKIP_LAYERS = 1")],
      ["test_text.py::test_llm_tokens_are_the_third_from_last_layer_without_final_norm"],
      "the second-from-last layer's states instead of the third"),
    M("text-joint-order", "text token layout", "magic141_core/text/encoders.py",
      [("torch.cat([image_tokens, tokens], dim=1),  # [B, 146 + 256, C]", "torch.cat([tokens, image_tokens], dim=1),  # [B, 146 + 256, C]")],
      [JOINT], "text tokens before image tokens: the mask no longer lines up"),
    M("vlm-stride", "text token layout", "magic141_core/text/prompts.py",
      [("if run % n_features % stride == 0:", "if run % n_features % stride == 1:")],
      ["test_text.py::test_real_llava_llama3_tokenizer_crop_is_95_and_vlm_keeps_146",
       "test_text.py::test_vlm_tokens_are_every_4th_image_feature_and_the_user_segment_of_the_last_normed_layer"],
      "the VLM keeps every 4th image feature from the second on"),
    M("image-crop-offset", "image preprocessing", "magic141_core/video/start_image.py",
      [("return int(round((image_height - height) / 2.0)), int(round((image_width - width) / 2.0))",
        "return 0, int(round((image_width - width) / 2.0))")],
      ["test_video_size.py::test_crop_keeps_the_centre_of_an_aspect_preserving_resize"],
      "the start image cropped from the top, not the centre"),
    M("image-crop-aspect", "image preprocessing", "magic141_core/video/start_image.py",
      [("new_h, new_w = height, int(height * ratio)", "new_h, new_w = height, width")],
      ["test_video_size.py::test_crop_keeps_the_centre_of_an_aspect_preserving_resize"],
      "a wide start image squashed instead of cropped"),
    M("vlm-normalisation", "image preprocessing", "magic141_core/text/images.py",
      [("CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]", "CLIP_MEAN = [0.5, 0.5, 0.5]")],
      ["test_text.py::test_the_built_in_llava_preprocessing_is_the_one_llava_llama_3_ships"],
      "the VLM sees the prior with the wrong normalisation"),
]
