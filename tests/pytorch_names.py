"""The names PyTorch RNN programs commonly use, grouped by where they live (the data of
test_pytorch_names.py). Gathered from the official tutorials and examples that train recurrent
models (char-RNN classification and generation, seq2seq with attention, the word-level language
model, time-sequence prediction, sentiment with packed sequences, BiLSTM-CRF tagging) and the
everyday Tensor/nn API they lean on. A dotted name is an attribute of an attribute
("Module.apply" is nn.Module.apply). Each group maps to (where to look, the names).
"""

TENSOR_METHODS = """
    T abs add add_ all amax amin any argmax argmin argsort backward bmm bool byte ceil chunk clamp clamp_ clip clone
    contiguous copy_ cos cpu cuda cumprod cumsum data detach detach_ device diag diagonal diff dim div div_ dot double
    dtype element_size eq equal exp expand expand_as fill_ flatten flip float floor gather ge grad grad_fn gt half
    index_select int is_contiguous is_cuda is_floating_point is_leaf isinf isnan item le lerp log log1p log_softmax
    logical_and logical_not logical_or logsumexp long lt masked_fill masked_fill_ masked_select matmul max mean min mm
    mul mul_ multinomial narrow ndim ne neg new_empty new_full new_ones new_tensor new_zeros nonzero norm normal_ numel
    numpy permute pow prod register_hook relu repeat repeat_interleave requires_grad requires_grad_ reshape retain_grad
    roll round rsqrt scatter scatter_ select shape sigmoid sign sin size softmax sort split sqrt square squeeze std sub
    sub_ sum t tanh to tolist topk transpose tril triu type type_as unbind uniform_ unique unsqueeze var view view_as
    zero_
""".split()

TOP_LEVEL = """
    Tensor tensor from_numpy as_tensor zeros ones full empty zeros_like ones_like full_like empty_like rand randn
    randint randperm rand_like randn_like arange linspace eye cat stack split chunk unbind where tanh sigmoid relu exp
    log sqrt abs sin cos softmax log_softmax matmul mm bmm dot outer einsum sum mean max min argmax argmin topk sort
    argsort cumsum clamp transpose reshape squeeze unsqueeze flatten gather masked_select isnan eq allclose equal tril
    triu flip pow std norm logsumexp maximum minimum multinomial clone numel is_tensor no_grad enable_grad
    set_grad_enabled inference_mode is_grad_enabled manual_seed save load float16 float32 float64 float double half
    int32 int64 long int bool uint8 set_default_dtype get_default_dtype set_default_device FloatTensor LongTensor
    device Generator cuda.is_available accelerator.is_available nn optim
""".split()

FUNCTIONAL = """
    relu tanh sigmoid softmax log_softmax softmin gelu leaky_relu elu selu silu mish softplus softsign hardtanh relu6
    hardsigmoid hardswish logsigmoid glu dropout embedding linear layer_norm one_hot pad normalize cosine_similarity
    pairwise_distance cross_entropy nll_loss mse_loss l1_loss smooth_l1_loss huber_loss kl_div binary_cross_entropy
    binary_cross_entropy_with_logits margin_ranking_loss ctc_loss
""".split()

NN = """
    Module Parameter Linear Embedding RNN LSTM GRU RNNCell LSTMCell GRUCell Dropout Dropout1d Dropout2d LayerNorm
    BatchNorm1d Sequential ModuleList ModuleDict ParameterList ParameterDict ReLU Tanh Sigmoid GELU LeakyReLU ELU SELU
    SiLU Mish PReLU GLU Softmax LogSoftmax Softplus Hardtanh Identity Flatten Unflatten CrossEntropyLoss NLLLoss
    MSELoss L1Loss SmoothL1Loss HuberLoss BCELoss BCEWithLogitsLoss KLDivLoss CosineSimilarity
    Module.parameters Module.named_parameters Module.children Module.modules Module.named_modules Module.state_dict
    Module.load_state_dict Module.train Module.eval Module.to Module.cuda Module.cpu Module.double Module.float
    Module.zero_grad Module.register_buffer Module.buffers Module.named_buffers Module.apply
    Module.register_forward_hook Module.register_forward_pre_hook Module.requires_grad_ Embedding.from_pretrained
    LSTM.flatten_parameters utils.clip_grad_norm_ utils.clip_grad_value_
""".split()

OPTIM = """
    Optimizer SGD Adam AdamW RMSprop Adagrad Adadelta Adamax NAdam RAdam LBFGS Optimizer.zero_grad Optimizer.step
    Optimizer.state_dict Optimizer.load_state_dict Optimizer.add_param_group lr_scheduler.StepLR
    lr_scheduler.MultiStepLR lr_scheduler.ExponentialLR lr_scheduler.CosineAnnealingLR lr_scheduler.LambdaLR
    lr_scheduler.OneCycleLR lr_scheduler.ReduceLROnPlateau
""".split()

RNN_UTILS = "pad_sequence pack_padded_sequence pad_packed_sequence pack_sequence unpack_sequence PackedSequence".split()

INIT = """
    uniform_ normal_ constant_ zeros_ ones_ xavier_uniform_ xavier_normal_ kaiming_uniform_ kaiming_normal_
    orthogonal_ calculate_gain
""".split()

DATA = "Dataset DataLoader TensorDataset Subset random_split RandomSampler SequentialSampler BatchSampler".split()

GROUPS = {  # group: (module path under tinygrad_seq, or "Tensor" for a tensor's attributes, names)
    "Tensor methods": ("Tensor", TENSOR_METHODS),
    "top-level functions": ("", TOP_LEVEL),
    "nn.functional": ("nn.functional", FUNCTIONAL),
    "nn modules": ("nn", NN),
    "optimizers": ("optim", OPTIM),
    "nn.utils.rnn": ("nn.utils.rnn", RNN_UTILS),
    "nn.init": ("nn.init", INIT),
    "utils.data": ("utils.data", DATA),
}

# Names deliberately missing, with the reason.
NOT_PROVIDED = {
    "einsum": "no einsum primitive yet (its derivative is an einsum with the operands permuted); matmul, bmm and "
              "broadcasting products cover the RNN programs sampled",
    "nn.functional.ctc_loss": "CTC's forward-backward recursion is not written yet",
}
