"""The textbook attention decoder: the same math as ``sat_core.decoder``, written the obvious way.

This is the version a first implementation usually looks like, and the baseline of
``benchmarks/bench_train_step.py``. It shares no code with :class:`AttentionDecoder`, only the
formulas (Eq. (1)-(7), Sec. 4.2 and 4.2.1), and is slower because, at EVERY time step, it

* re-projects all annotation vectors, W_a a_i + b (an L x D x attn_dim matmul per step),
* forms the context as an elementwise product and sum instead of a batched matmul,
* runs ``nn.LSTMCell`` on the concatenated input [E y_{t-1}; z_hat_t],
* applies the output layer of Eq. (7) one step at a time.

:meth:`NaiveDecoder.from_decoder` copies an :class:`AttentionDecoder`'s weights so that the two
can be checked against each other (tests) and timed on equal math (benchmark).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NaiveDecoder(nn.Module):
    """Soft attention + LSTM + deep output, one step at a time (Sec. 3.1.2 and 4.2).

    Default sizes are our paper-scale presets' (m=512, n=1024); the paper gives none.
    """

    def __init__(
        self,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int = 512,
        hidden_dim: int = 1024,
        attn_dim: int = 512,
        dropout: float = 0.5,
        gate: bool = True,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.att_a = nn.Linear(feature_dim, attn_dim)  # W_a a_i + b
        self.att_h = nn.Linear(hidden_dim, attn_dim, bias=False)  # U_a h_{t-1}
        self.att_out = nn.Linear(attn_dim, 1)  # w_att, c
        self.f_beta = nn.Linear(hidden_dim, 1) if gate else None
        self.init_h = nn.Linear(feature_dim, hidden_dim)
        self.init_c = nn.Linear(feature_dim, hidden_dim)
        self.lstm = nn.LSTMCell(embed_dim + feature_dim, hidden_dim)
        self.out_h = nn.Linear(hidden_dim, embed_dim, bias=False)  # L_h
        self.out_z = nn.Linear(feature_dim, embed_dim, bias=False)  # L_z
        self.out = nn.Linear(embed_dim, vocab_size)  # L_o
        self.dropout = nn.Dropout(dropout)

    def forward(self, a: Tensor, captions_in: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher forcing; returns logits (B, T, K) and alpha (B, T, L), zero at padded steps."""
        B, T = captions_in.shape
        mean_a = a.mean(dim=1)
        h = torch.tanh(self.init_h(mean_a))
        c = torch.tanh(self.init_c(mean_a))
        all_logits, all_alpha = [], []
        for t in range(T):
            y_prev = self.embedding(captions_in[:, t])
            # Eq. (4)-(5), re-projecting every a_i at every step
            e = self.att_out(torch.tanh(self.att_a(a) + self.att_h(h).unsqueeze(1))).squeeze(2)
            alpha = torch.softmax(e, dim=1)
            z = (alpha.unsqueeze(2) * a).sum(dim=1)  # sum_i alpha_ti a_i
            if self.f_beta is not None:  # Sec. 4.2.1
                z = torch.sigmoid(self.f_beta(h)) * z
            h, c = self.lstm(torch.cat([y_prev, z], dim=1), (h, c))  # Eq. (1)-(3)
            logits = self.out(self.dropout(y_prev + self.out_h(h) + self.out_z(z)))  # Eq. (7)
            all_logits.append(logits)
            all_alpha.append(alpha)
        real = (torch.arange(T, device=a.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
        return torch.stack(all_logits, 1) * real, torch.stack(all_alpha, 1) * real

    @classmethod
    def from_decoder(cls, decoder: nn.Module) -> NaiveDecoder:
        """A NaiveDecoder with the weights of a ``sat_core.decoder.AttentionDecoder``.

        Maps T = [T_y | T_hz] onto ``nn.LSTMCell``: T_y and T_hz's z_hat columns become
        ``weight_ih`` (input [E y; z_hat]), T_hz's h columns ``weight_hh``, and the gate rows are
        reordered from the paper's (i, f, o, g) to LSTMCell's (i, f, g, o).
        """
        cfg = decoder.cfg
        naive = cls(cfg.vocab_size, cfg.feature_dim, cfg.embed_dim, cfg.hidden_dim,
                    cfg.attn_dim, cfg.dropout, cfg.gate)
        naive = naive.to(device=decoder.L_o.weight.device, dtype=decoder.L_o.weight.dtype)
        n = cfg.hidden_dim
        order = torch.cat([torch.arange(0, 2 * n), torch.arange(3 * n, 4 * n),
                           torch.arange(2 * n, 3 * n)]).to(decoder.L_o.weight.device)
        T_hz = decoder.T_hz.weight
        with torch.no_grad():
            naive.embedding.weight.copy_(decoder.embedding.weight)
            naive.att_a.weight.copy_(decoder.attention.W_a.weight)
            naive.att_a.bias.copy_(decoder.attention.W_a.bias)
            naive.att_h.weight.copy_(decoder.attention.U_a.weight)
            naive.att_out.weight.copy_(decoder.attention.w_att.weight)
            naive.att_out.bias.copy_(decoder.attention.w_att.bias)
            if cfg.gate:
                naive.f_beta.weight.copy_(decoder.gate.f_beta.weight)
                naive.f_beta.bias.copy_(decoder.gate.f_beta.bias)
            pairs = ((naive.init_h, decoder.f_init_h), (naive.init_c, decoder.f_init_c))
            for mine, theirs in pairs:
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
            naive.lstm.weight_ih.copy_(torch.cat([decoder.T_y.weight, T_hz[:, n:]], 1)[order])
            naive.lstm.weight_hh.copy_(T_hz[:, :n][order])
            naive.lstm.bias_ih.copy_(decoder.T_y.bias[order])
            naive.lstm.bias_hh.zero_()
            naive.out_h.weight.copy_(decoder.L_h.weight)
            naive.out_z.weight.copy_(decoder.L_z.weight)
            naive.out.weight.copy_(decoder.L_o.weight)
            naive.out.bias.copy_(decoder.L_o.bias)
        return naive
