# ruff: noqa: E501  (Japanese prose: ruff counts full-width characters double, so lines are wrapped by eye)
"""The book's text: for each roadmap item, what it is and why it matters (日本語 / English), its equations (TeX,
rendered offline by the vendored KaTeX), the code that computes them (references resolved to line ranges when
the book is built, :mod:`dodai.book.code`) and what to try next.

Numbers never appear here: every figure on a page comes from the item's committed evidence.
"""

from __future__ import annotations

# The seed's learning path (its "理解の優先順位"), each topic with the items that teach it.
STEPS = [
    ("ステップ1：入門", "Step 1: first steps", [
        ("ベクトルと行列", "Vectors and matrices", ["R1.2", "R1.3", "R1.4", "R1.1"]),
        ("Attentionの仕組み", "How attention works", ["R4.1", "R9.1", "R3.3"]),
        ("TokenとEmbedding", "Tokens and embeddings", ["R4.6", "R1.5"]),
    ]),
    ("ステップ2：構造理解", "Step 2: understanding the structure", [
        ("Transformerのブロック構成", "The Transformer block", ["R4.4", "R4.5", "R3.4", "R6.2"]),
        ("Q/K/V・ポジションエンコーディング", "Q/K/V and positional encoding", ["R4.2", "R4.3", "R6.4", "R6.5"]),
        ("誤差逆伝播・最適化", "Backpropagation and optimisation",
         ["R2.1", "R2.2", "R2.3", "R2.4", "R3.1", "R3.2"]),
    ]),
    ("ステップ3：実践", "Step 3: practice", [
        ("BERTとGPTの違い", "BERT vs GPT", ["R9.3", "R6.1", "R6.3"]),
        ("RAGの動作", "How RAG works", ["R7.1", "R7.2", "R7.3", "R7.4", "R7.5"]),
        ("推論テクニック（sampling, temperature）", "Decoding: sampling, temperature",
         ["R5.4", "R5.5", "R5.1", "R5.2", "R5.3"]),
        ("セキュリティ・倫理", "Safety and ethics", ["R8.1", "R8.2", "R8.3"]),
        ("マルチモーダル", "Multimodal", ["R9.2"]),
    ]),
]

# The seed's "おすすめ深堀り順" (recommended deep-dive order), each step with its items.
DEEP_DIVE = [
    ("Self-Attentionを式レベルで理解", "Self-attention at the level of equations", ["R9.1", "R4.1", "R4.2"]),
    ("Positional Encoding (Sinusoidal & RoPE)", "Positional encoding (sinusoidal & RoPE)", ["R4.3", "R6.4"]),
    ("KV Cacheと高速化技術", "The KV cache and fast inference", ["R5.5", "R6.5", "R5.4"]),
    ("RLHFとAlignment", "RLHF and alignment", ["R5.2", "R5.3"]),
    ("Multi-modal拡張（VLM）", "Multimodal extension (VLM)", ["R9.2"]),
]


def _p(ja: str, en: str) -> dict:
    return {"ja": ja, "en": en}


PAGES: dict[str, dict] = {
    "R1.1": dict(
        what=_p("言語モデルは「次のトークンの確率分布」です。n-gram モデルは直前 n−1 トークンを数えて確率を推定し、"
                "文全体の確率は連鎖律で掛け合わせます。見たことのない組み合わせに確率 0 を与えないよう、"
                "Kneser–Ney 平滑化で低次の分布を混ぜます。",
                "A language model is a probability distribution over the next token. An n-gram model estimates it "
                "by counting the previous n−1 tokens; the chain rule multiplies the steps into the probability of "
                "a whole text. Kneser–Ney smoothing mixes in lower orders so an unseen combination never gets "
                "probability 0."),
        why=_p("尤度・交差エントロピー・パープレキシティはニューラル LM でもそのまま使う評価尺度です。数えるだけの"
               "モデルが基準線になります。",
               "Likelihood, cross-entropy and perplexity are exactly the measures used for neural LMs; a "
               "counting model is the baseline every neural model must beat."),
        eq=[r"p(w_1,\dots,w_T)=\prod_{t=1}^{T} p(w_t\mid w_{t-n+1},\dots,w_{t-1})",
            r"p_{\mathrm{KN}}(w\mid h)=\frac{\max(c(h,w)-D,0)}{c(h)}+\frac{D\,N_{1+}(h\,\bullet)}{c(h)}\,"
            r"p_{\mathrm{KN}}(w\mid h')",
            r"\mathrm{PPL}=\exp\Big(-\frac{1}{T}\sum_t \log p(w_t\mid w_{<t})\Big)"],
        code=["dodai/basics/ngram.py::NGramLM._prob[p = 1.0 / V@@return p]",
              "dodai/basics/ngram.py::NGramLM.perplexity"],
        next=_p("`dodai roadmap run R1.1` の n を 4 にしてみる。学習データを減らすと MLE トライグラムのパープレキシティが"
                "無限大になる理由を考える。",
                "Try n = 4; shrink the training text and see why the MLE trigram's perplexity becomes infinite."),
    ),
    "R1.2": dict(
        what=_p("行列 A の固有値分解 A = VΛVᵀ と特異値分解 W = UΣVᵀ を、ヤコビ法で自前実装します。上位 r 個の特異値だけ残すと"
                "W の最良の階数 r 近似になり（Eckart–Young）、学習済み GPT の重みを圧縮できます。",
                "dodai computes the eigendecomposition A = VΛVᵀ and the SVD W = UΣVᵀ with its own Jacobi "
                "rotations. Keeping the r largest singular values gives the best rank-r approximation of W "
                "(Eckart–Young), which compresses a trained GPT's weights."),
        why=_p("埋め込みの PCA、LoRA の低ランク更新、重みの圧縮はすべてこの分解の応用です。",
               "PCA of embeddings, LoRA's low-rank updates and weight compression are all this decomposition."),
        eq=[r"W = U\Sigma V^\top,\qquad W_r=\sum_{i=1}^{r}\sigma_i u_i v_i^\top",
            r"\|W-W_r\|_F^2=\sum_{i>r}\sigma_i^2"],
        code=["dodai/basics/linalg.py::svd", "dodai/basics/linalg.py::low_rank"],
        next=_p("ランクごとの検証損失の表を見て、どのランクで元のモデルにほぼ戻るかを確かめる。",
                "Read the rank-vs-loss table: at which rank does the compressed model catch up with the original?"),
    ),
    "R1.3": dict(
        what=_p("逆伝播（reverse-mode 自動微分）を NumPy で一から実装します。計算グラフを逆順にたどり、各演算の局所勾配を"
                "連鎖律で掛け合わせます。その勾配で SGD・モーメンタム・Adam・AdamW が重みを更新します。",
                "Reverse-mode automatic differentiation in NumPy from scratch: walk the computation graph "
                "backwards, multiplying local gradients by the chain rule. SGD, momentum, Adam and AdamW then "
                "update the weights with those gradients."),
        why=_p("PyTorch の `loss.backward()` と `optimizer.step()` の中身がこれです。",
               "This is what `loss.backward()` and `optimizer.step()` do inside PyTorch."),
        eq=[r"\frac{\partial L}{\partial x}=\sum_{y\in\mathrm{children}(x)}\frac{\partial L}{\partial y}"
            r"\frac{\partial y}{\partial x}",
            r"m_t=\beta_1 m_{t-1}+(1-\beta_1)g_t,\; v_t=\beta_2 v_{t-1}+(1-\beta_2)g_t^2,\;"
            r"\theta_t=\theta_{t-1}-\eta\frac{\hat m_t}{\sqrt{\hat v_t}+\epsilon}"],
        code=["dodai/basics/autograd.py::Tensor.backward", "dodai/basics/optim.py::Adam"],
        next=_p("Rosenbrock 関数の学習率を変えて、SGD とAdam の軌跡がどう変わるかを図で見る。",
                "Change the learning rate on the Rosenbrock valley and compare the SGD and Adam trajectories."),
    ),
    "R1.4": dict(
        what=_p("エントロピー H(p) は分布の不確かさ、交差エントロピー H(p,q) は q で p を符号化するときの平均ビット数、"
                "KL ダイバージェンスはその差です。言語モデルの損失は交差エントロピーそのものです。",
                "Entropy H(p) is a distribution's uncertainty, cross-entropy H(p,q) the average code length when "
                "coding p with q, and the KL divergence their difference. An LM's loss is exactly a "
                "cross-entropy."),
        why=_p("bits per byte、蒸留、RLHF の KL ペナルティ、サンプリングの診断がすべてこの量で書けます。",
               "Bits per byte, distillation, RLHF's KL penalty and sampling diagnostics are all written in "
               "these quantities."),
        eq=[r"H(p)=-\sum_x p(x)\log p(x),\qquad H(p,q)=-\sum_x p(x)\log q(x)",
            r"H(p,q)=H(p)+D_{\mathrm{KL}}(p\,\|\,q)",
            r"\mathrm{bpb}=\frac{\text{nats per token}\times\text{tokens}}{\ln 2\times\text{bytes}}"],
        code=["dodai/info.py::cross_entropy", "dodai/info.py::kl_divergence", "dodai/info.py::bits_per_byte"],
        next=_p("文脈ごとの分解表で、KL が大きい（モデルが外している）文脈を探す。",
                "In the per-context table, find the contexts where KL is largest — where the model is most wrong."),
    ),
    "R1.5": dict(
        what=_p("Word2Vec は「周りの単語を当てる」ことで単語ベクトルを学習します。skip-gram は中心語から周辺語を、"
                "CBOW は周辺語から中心語を予測し、負例サンプリングで softmax を二値分類に置き換えます。",
                "Word2Vec learns word vectors by predicting neighbours: skip-gram predicts the context from the "
                "centre word, CBOW the centre from the context; negative sampling replaces the softmax by "
                "binary classification."),
        why=_p("「意味の近さ＝ベクトルの近さ」という分布表現は、LLM の埋め込み層の考え方の出発点です。",
               "Distributed representations — similar meaning, nearby vectors — are where an LLM's embedding "
               "layer comes from."),
        eq=[r"\log\sigma(u_o^\top v_c)+\sum_{k=1}^{K}\mathbb{E}_{w_k\sim P_n}\log\sigma(-u_{w_k}^\top v_c)",
            r"P_n(w)\propto c(w)^{3/4}"],
        code=["dodai/embeddings/word2vec.py::sgns_step", "dodai/embeddings/word2vec.py::noise_distribution"],
        next=_p("PCA の図で単数形と複数形の組が同じ向きにずれているか確かめる。",
                "In the PCA plot, check whether singular→plural pairs shift in the same direction."),
    ),
    "R2.1": dict(
        what=_p("パーセプトロンは w·x + b の符号で分類し、間違えたときだけ w ← w + y x と更新します。線形分離可能なら"
                "有限回で収束します（Novikoff）が、XOR は一本の直線では分けられません。隠れ層を持つ MLP なら解けます。",
                "A perceptron classifies by the sign of w·x + b and updates w ← w + y x only on mistakes. On "
                "separable data it converges in finitely many steps (Novikoff); XOR cannot be split by one line, "
                "but an MLP with a hidden layer solves it."),
        why=_p("ニューラルネットの最小単位と、非線形な隠れ層が必要な理由がわかります。",
               "The smallest unit of a neural network, and why non-linear hidden layers are needed."),
        eq=[r"\hat y=\operatorname{sign}(w^\top x+b),\qquad w\leftarrow w+y_i x_i\ \text{if}\ y_i(w^\top x_i+b)\le 0",
            r"\text{mistakes}\le (R/\gamma)^2"],
        code=["dodai/basics/perceptron.py::Perceptron.fit", "dodai/basics/perceptron.py::mistake_bound"],
        next=_p("マージンを小さくしたデータで、誤り回数が上界 (R/γ)² に近づくかを見る。",
                "Shrink the margin and watch the mistake count approach the (R/γ)² bound."),
    ),
    "R2.2": dict(
        what=_p("活性化関数 ReLU・GELU・SiLU と、確率を作る softmax。softmax は最大値を引いてから exp を取る"
                "（log-sum-exp）ことで、大きな入力でも溢れません。",
                "Activations ReLU, GELU and SiLU, and softmax, which turns scores into probabilities. Subtracting "
                "the maximum before exp (log-sum-exp) keeps softmax finite on huge inputs."),
        why=_p("数値的に安定な式を書けないと、学習がすぐ NaN になります。",
               "Without the numerically stable forms, training turns into NaN."),
        eq=[r"\operatorname{softmax}(z)_i=\frac{e^{z_i-m}}{\sum_j e^{z_j-m}},\quad m=\max_j z_j",
            r"\mathrm{GELU}(x)=x\,\Phi(x),\qquad \mathrm{SiLU}(x)=x\,\sigma(x)"],
        code=["dodai/basics/autograd.py::_softmax", "dodai/basics/autograd.py::_log_softmax"],
        next=_p("素朴な softmax がどの入力で inf/NaN になるかを表で確かめる。",
                "Find in the table which inputs break the naive softmax."),
    ),
    "R2.3": dict(
        what=_p("分類には交差エントロピー、回帰には二乗誤差（MSE）。softmax と交差エントロピーを組み合わせると、"
                "ロジットに対する勾配は p − y という単純な形になります。",
                "Cross-entropy for classification, mean squared error for regression. Softmax followed by "
                "cross-entropy has the simple gradient p − y with respect to the logits."),
        why=_p("大きく外れた予測でも勾配が消えないことが、交差エントロピーが使われる理由です。",
               "Its gradient does not vanish on confidently wrong predictions — why LMs use cross-entropy."),
        eq=[r"L_{\mathrm{CE}}=-\sum_i y_i\log p_i,\qquad \frac{\partial L_{\mathrm{CE}}}{\partial z}=p-y",
            r"L_{\mathrm{MSE}}=\frac{1}{n}\sum_i (\hat y_i-y_i)^2"],
        code=["dodai/basics/autograd.py::Tensor.log_softmax"],
        next=_p("勾配の表で、ロジット −10 のときの CE と MSE の勾配を比べる。",
                "Compare CE's and MSE's gradient at logit −10 in the table."),
    ),
    "R2.4": dict(
        what=_p("ミニバッチ SGD で MLP を本物の手書き数字で学習し、過学習（訓練精度 100 %、検証精度は頭打ち）を見て、"
                "L2 正則化・重み減衰・ドロップアウト・早期終了で抑えます。",
                "An MLP trained with mini-batch SGD on real handwritten digits; we watch it over-fit (100 % "
                "training accuracy, validation plateaus) and cure it with L2, weight decay, dropout and early "
                "stopping."),
        why=_p("訓練・検証・テストを分ける習慣と正則化は、LLM の学習でもそのまま必要です。",
               "Splitting train/validation/test and regularising are habits an LLM run needs just the same."),
        eq=[r"L=\frac{1}{B}\sum_{i\in\text{batch}}\ell(f(x_i),y_i)+\frac{\lambda}{2}\|W\|^2",
            r"\tilde h=\frac{m\odot h}{1-p},\quad m_j\sim\mathrm{Bernoulli}(1-p)"],
        code=["dodai/basics/mlp.py::train"],
        next=_p("訓練・検証曲線の図で、どの正則化が一番早く効くかを見る。",
                "In the curves, see which regulariser closes the gap soonest."),
    ),
    "R3.1": dict(
        what=_p("RNN は隠れ状態 h_t を毎ステップ更新して系列を読みます。勾配は同じ行列を何度も掛けて過去へ戻るので、"
                "距離とともに指数的に小さくなり（勾配消失）、遠い過去を学べません。",
                "An RNN reads a sequence by updating a hidden state h_t at every step. The gradient travels back "
                "through the same matrix again and again, so it shrinks exponentially with distance (vanishing "
                "gradients) and the far past cannot be learned."),
        why=_p("これが LSTM と Attention が生まれた理由です。",
               "This is why LSTMs and then attention were invented."),
        eq=[r"h_t=\tanh(W_{ih}x_t+W_{hh}h_{t-1}+b)",
            r"\frac{\partial h_t}{\partial h_{t-k}}=\prod_{j=t-k+1}^{t}\operatorname{diag}(1-h_j^2)\,W_{hh}"],
        code=["dodai/models/rnn.py::rnn_cell"],
        next=_p("遅延を 5 から 50 まで変えて、正解率が偶然レベルに落ちる距離を探す。",
                "Vary the delay between 5 and 50 and find where accuracy falls to chance."),
    ),
    "R3.2": dict(
        what=_p("LSTM はセル状態 c_t を足し算で運び、忘却・入力・出力ゲートで情報の出し入れを決めます。GRU は更新・"
                "リセットの 2 ゲートで同じことをより少ない重みで行います。",
                "An LSTM carries a cell state c_t by addition and decides with forget, input and output gates "
                "what enters and leaves; a GRU does the same with two gates (update, reset) and fewer weights."),
        why=_p("足し算の経路があるので、勾配が遠くまで届きます。",
               "The additive path lets the gradient reach far back."),
        eq=[r"c_t=f_t\odot c_{t-1}+i_t\odot\tanh(W_c[x_t,h_{t-1}]),\quad h_t=o_t\odot\tanh(c_t)",
            r"h_t=(1-z_t)\odot n_t+z_t\odot h_{t-1}"],
        code=["dodai/models/rnn.py::lstm_cell", "dodai/models/rnn.py::gru_cell"],
        next=_p("忘却ゲートのバイアスを 0 にしたときの勾配比（結果 JSON）を見る。",
                "Look at the gradient ratio with the forget-gate bias at 0 (in results.json)."),
    ),
    "R3.3": dict(
        what=_p("Seq2Seq はエンコーダが入力を読み、デコーダが出力を一つずつ生成します。Attention なしでは入力全体を"
                "一つのベクトルに詰め込みますが、Attention（Bahdanau / Luong）は各ステップで入力のどこを見るかを"
                "重み α で選びます。",
                "A seq2seq model reads the input with an encoder and writes the output token by token with a "
                "decoder. Without attention the whole input must fit one vector; with attention (Bahdanau / "
                "Luong) every step chooses, with weights α, where in the input to look."),
        why=_p("Transformer の Attention はこの仕組みを全層に広げたものです。",
               "The Transformer's attention generalises exactly this to every layer."),
        eq=[r"\alpha_{ts}=\frac{\exp(\mathrm{score}(h_t,\bar h_s))}{\sum_{s'}\exp(\mathrm{score}(h_t,\bar h_{s'}))},"
            r"\quad c_t=\sum_s\alpha_{ts}\bar h_s",
            r"\mathrm{score}_{\mathrm{Bahdanau}}=v^\top\tanh(W_1h_t+W_2\bar h_s),\quad"
            r"\mathrm{score}_{\mathrm{Luong}}=h_t^\top W\bar h_s"],
        code=["dodai/models/seq2seq.py::Seq2Seq.decode_step"],
        next=_p("アラインメントのヒートマップで、出力の各文字が入力のどこを見ているか確かめる。",
                "In the alignment heat-maps, check where each output symbol looks in the input."),
    ),
    "R3.4": dict(
        what=_p("同じパラメータ数・同じステップ数で RNN・LSTM・GRU・Transformer の言語モデルを並べて学習します。",
                "RNN, LSTM, GRU and Transformer language models trained side by side with the same parameter "
                "count and the same number of steps."),
        why=_p("「Transformer が常に勝つ」わけではありません。小さな予算では何が効くかを測って確かめます。",
               "The Transformer does not win everywhere: at a small budget, measure what works instead of "
               "assuming it."),
        eq=[r"L=-\frac{1}{T}\sum_t\log p_\theta(x_{t+1}\mid x_{\le t})"],
        code=["dodai/models/gpt.py::Block.forward"],
        next=_p("時間あたりとステップあたりの順位の違いを表で比べる。", "Compare the ranking per step and per second."),
    ),
    "R4.1": dict(
        what=_p("Self-Attention は各トークンの問い合わせ Q と全トークンの鍵 K の内積で重みを作り、値 V を混ぜます。"
                "√d で割ってから softmax を取り、因果マスクで未来を見えなくします。",
                "Self-attention scores every query Q against every key K, scales by √d, normalises with softmax "
                "and mixes the values V; a causal mask hides the future."),
        why=_p("LLM 理解の中心です。読みやすい参照実装と速い SDPA が同じ値を出すことを確かめます。",
               "It is the heart of an LLM; the readable reference and the fast SDPA path must agree."),
        eq=[r"\operatorname{Attention}(Q,K,V)=\operatorname{softmax}\!\Big(\frac{QK^\top}{\sqrt{d}}+M\Big)V,"
            r"\quad M_{ij}=\begin{cases}0 & j\le i\\ -\infty & j>i\end{cases}"],
        code=["dodai/nn/attention.py::attention_reference"],
        next=_p("`docs/self_attention.md`（R9.1）で 1 層を式ごとに追う。",
                "Follow one layer equation by equation on the R9.1 page."),
    ),
    "R4.2": dict(
        what=_p("Multi-Head Attention は d 次元を H 個のヘッドに分け、別々の視点で Attention を取ってから連結します。"
                "GQA は複数の問い合わせヘッドで K・V を共有し、MQA は K・V を 1 組だけ持ちます。",
                "Multi-head attention splits d into H heads that attend separately and are concatenated. GQA "
                "shares each K/V head among several query heads; MQA keeps a single K/V head."),
        why=_p("KV キャッシュの大きさが H_kv に比例するので、推論のメモリが減ります。",
               "The KV cache scales with H_kv, so inference memory shrinks."),
        eq=[r"\mathrm{MHA}(X)=\operatorname{Concat}(\mathrm{head}_1,\dots,\mathrm{head}_H)W^O,\quad"
            r"\mathrm{head}_h=\operatorname{Attention}(XW_h^Q,XW_{g(h)}^K,XW_{g(h)}^V)",
            r"g(h)=\lfloor h\,H_{kv}/H\rfloor"],
        code=["dodai/nn/attention.py::repeat_kv", "dodai/nn/attention.py::CausalSelfAttention.forward"],
        next=_p("MHA・GQA・MQA の検証損失と KV バイト数を表で比べる。",
                "Compare the validation loss and KV bytes of MHA, GQA and MQA."),
    ),
    "R4.3": dict(
        what=_p("Attention は順番を知らないので位置情報を加えます。正弦波・学習型は埋め込みに足し、RoPE は Q と K を位置に"
                "応じて回転し、ALiBi は距離に比例するペナルティをスコアに足します。",
                "Attention is blind to order, so position is added: sinusoidal and learned tables are added to the "
                "embeddings, RoPE rotates Q and K by position, ALiBi adds a penalty proportional to distance."),
        why=_p("学習より長い文に外挿できるかは、位置表現の選び方で決まります。",
               "Whether a model extrapolates to longer texts than it was trained on depends on this choice."),
        eq=[r"PE_{p,2i}=\sin\!\big(p/10000^{2i/d}\big),\quad PE_{p,2i+1}=\cos\!\big(p/10000^{2i/d}\big)",
            r"\mathrm{RoPE}(x,p)=x\cos(p\theta)+\operatorname{rot}(x)\sin(p\theta),\quad"
            r"\langle\mathrm{RoPE}(q,m),\mathrm{RoPE}(k,n)\rangle=f(q,k,m-n)",
            r"\mathrm{score}_{ij}=q_i^\top k_j/\sqrt d-m_h\,(i-j)"],
        code=["dodai/nn/position.py::sinusoidal_table", "dodai/nn/position.py::apply_rope",
              "dodai/nn/position.py::alibi_bias"],
        next=_p("学習長の 1〜8 倍での劣化の表で、RoPE と ALiBi を比べる。",
                "Compare RoPE and ALiBi at 1× to 8× the training length."),
    ),
    "R4.4": dict(
        what=_p("FFN は各トークンに独立に掛かる 2 層の MLP です。GELU MLP と、ゲート付きの SwiGLU を比べます。",
                "The feed-forward network is a two-layer MLP applied to each token independently; GELU MLP versus "
                "the gated SwiGLU."),
        why=_p("パラメータの大半は FFN にあります。Llama 系は SwiGLU を使います。",
               "Most parameters live in the FFN; Llama-family models use SwiGLU."),
        eq=[r"\mathrm{FFN}(x)=W_2\,\mathrm{GELU}(W_1x)",
            r"\mathrm{SwiGLU}(x)=W_2\big(\mathrm{SiLU}(W_gx)\odot W_ux\big)"],
        code=["dodai/nn/ffn.py::SwiGLU.forward", "dodai/nn/ffn.py::MLP.forward"],
        next=_p("同じパラメータ数に揃えたときの検証損失の差を見る。", "Compare the losses at equal parameter count."),
    ),
    "R4.5": dict(
        what=_p("LayerNorm・RMSNorm で各トークンのベクトルを正規化し、残差接続 x + f(x) で層を積みます。正規化を f の前に"
                "置く Pre-LN と後ろに置く Post-LN を、ウォームアップありなしで比べます。",
                "LayerNorm and RMSNorm normalise each token's vector; residual connections x + f(x) stack the "
                "layers. Pre-LN (norm before f) and Post-LN (norm after the sum) are compared with and without "
                "learning-rate warm-up."),
        why=_p("深いモデルの学習が安定するかどうかはここで決まります（Xiong et al. 2020）。",
               "Whether a deep model trains stably is decided here (Xiong et al. 2020)."),
        eq=[r"\mathrm{LN}(x)=g\odot\frac{x-\mu}{\sqrt{\sigma^2+\epsilon}}+b,\qquad"
            r"\mathrm{RMSNorm}(x)=g\odot\frac{x}{\sqrt{\overline{x^2}+\epsilon}}",
            r"\text{Pre-LN: }x+f(\mathrm{LN}(x)),\qquad\text{Post-LN: }\mathrm{LN}(x+f(x))"],
        code=["dodai/nn/norm.py::rms_norm_reference", "dodai/models/gpt.py::Block.forward"],
        next=_p("学習曲線の図で、Post-LN がウォームアップで追いつく様子を見る。",
                "Watch Post-LN catch up with warm-up in the curves."),
    ),
    "R4.6": dict(
        what=_p("トークン化は文字列を整数列に変えます。バイト BPE は頻出するバイト対を繰り返し併合し、Unigram は確率モデル"
                "で最も尤もらしい分割を Viterbi で選びます。日本語のように空白のない文でも使えます。",
                "Tokenisation turns text into integers. Byte-level BPE repeatedly merges the most frequent pair; "
                "Unigram (SentencePiece) keeps a probabilistic vocabulary and picks the most likely segmentation "
                "with Viterbi — it works on Japanese, which has no spaces."),
        why=_p("語彙と分割が系列長・計算量・多言語の公平さを決めます。",
               "The vocabulary decides sequence length, compute and how fair a model is across languages."),
        eq=[r"(a,b)^*=\arg\max_{(a,b)}\operatorname{count}(a,b)\ \Rightarrow\ \text{merge }ab",
            r"x^*=\arg\max_{x\in S(w)}\sum_{i}\log p(x_i)"],
        code=["dodai/tokenizers/bpe.py::train_fast[while@@]", "dodai/tokenizers/unigram.py::_Lattice.viterbi"],
        next=_p("分割例の表で、BPE と Unigram が日本語をどう切るか比べる。",
                "Compare how BPE and Unigram cut the Japanese sentences in the table."),
    ),
    "R5.1": dict(
        what=_p("事前学習は大量のテキストで次トークン予測を学ぶことです。同じデータ量でモデルを大きくすると損失がべき乗則で"
                "下がるかを、小さな GPT の系列で測ります。",
                "Pre-training learns next-token prediction on a lot of text. A family of small GPTs trained on the "
                "same data shows whether loss falls as a power law of model size."),
        why=_p("スケーリング則は、計算予算をモデルの大きさとデータにどう配分するかの根拠です。",
               "Scaling laws tell how to split a compute budget between model size and data."),
        eq=[r"L(N)=a\,N^{-\alpha}+c"],
        code=["dodai/experiments/r5_1.py::fit_power_law"],
        next=_p("`dodai speedrun` で 5 分の事前学習を走らせ、報告書のサンプル文を読む。",
                "Run `dodai speedrun` (5 minutes) and read the samples in its report."),
    ),
    "R5.2": dict(
        what=_p("微調整は事前学習済みモデルを目的のタスクに合わせます。全重みを更新するフル微調整と、凍結した重みに低ランクの"
                "差分 BA だけを学ぶ LoRA を比べます。応答部分だけに損失を掛けます。",
                "Fine-tuning adapts a pre-trained model to a task: full fine-tuning updates every weight, LoRA "
                "learns only a low-rank difference BA beside the frozen weights. The loss covers the replies only."),
        why=_p("LoRA なら少ないメモリで同じ効果に近づけます。",
               "LoRA gets close to the same effect with far less memory."),
        eq=[r"W' = W + \frac{\alpha}{r}BA,\quad B\in\mathbb{R}^{d\times r},\ A\in\mathbb{R}^{r\times k}",
            r"L=-\sum_t m_t\log p(y_t\mid y_{<t}),\quad m_t=1\ \text{on reply tokens}"],
        code=["dodai/finetune/lora.py::LoRALinear.forward", "dodai/finetune/sft.py::masked_lm_loss"],
        next=_p("`dodai sft --lora-rank 8` で自分のデータを学習させる。",
                "Fine-tune on your own chats with `dodai sft --lora-rank 8`."),
    ),
    "R5.3": dict(
        what=_p("RLHF は人の好みでモデルを調整します。報酬モデル（Bradley–Terry）と PPO、報酬モデルを使わない DPO、"
                "グループ内で相対評価する GRPO を実装し、同じ予算で比べます。",
                "RLHF aligns a model with preferences: a reward model (Bradley–Terry) with PPO, DPO without a "
                "reward model, and GRPO with group-relative advantages — compared at the same budget."),
        why=_p("報酬モデルの穴を突く「報酬ハッキング」も、KL ペナルティが防ぐはずの失敗として観察できます。",
               "Reward hacking — the failure the KL penalty is meant to prevent — shows up here too."),
        eq=[r"L_{\mathrm{BT}}=-\log\sigma(r(x,y_w)-r(x,y_l))",
            r"L_{\mathrm{DPO}}=-\log\sigma\Big(\beta\log\frac{\pi(y_w|x)}{\pi_{\mathrm{ref}}(y_w|x)}"
            r"-\beta\log\frac{\pi(y_l|x)}{\pi_{\mathrm{ref}}(y_l|x)}\Big)",
            r"A_i=\frac{r_i-\operatorname{mean}(r)}{\operatorname{std}(r)}\quad\text{(GRPO)}"],
        code=["dodai/finetune/losses.py::dpo_loss", "dodai/finetune/losses.py::grpo_advantages",
              "dodai/finetune/losses.py::ppo_policy_loss"],
        next=_p("学習曲線の図で RM+PPO の報酬と実際の正解率が離れていく様子を見る。",
                "Watch RM+PPO's reward and its real accuracy diverge in the curves."),
    ),
    "R5.4": dict(
        what=_p("生成はロジットからトークンを選ぶ作業です。greedy は最大値、温度 T はロジットを割って分布を鋭く／平らにし、"
                "top-k・top-p・min-p は候補を絞ってから引きます。beam search は複数の候補列を並行して保ちます。",
                "Decoding picks tokens from logits: greedy takes the maximum, temperature T divides the logits to "
                "sharpen or flatten, top-k / top-p / min-p cut the candidates before sampling, beam search keeps "
                "several sequences in parallel."),
        why=_p("同じモデルでも、出力の多様さと正確さはここで決まります。",
               "The same model gives varied or precise text depending on these knobs."),
        eq=[r"p_i=\frac{e^{z_i/T}}{\sum_j e^{z_j/T}}",
            r"\text{top-}p:\ \text{smallest }S\text{ with }\sum_{i\in S}p_{(i)}\ge p"],
        code=["dodai/generate/processors.py::top_p_filter", "dodai/generate/processors.py::apply_temperature"],
        next=_p("`dodai generate --temperature 1.5 --top-p 0.9` で同じプロンプトを何度か生成する。",
                "Generate the same prompt a few times with `--temperature 1.5 --top-p 0.9`."),
    ),
    "R5.5": dict(
        what=_p("KV キャッシュは各層の過去のキーと値を保存し、新しいトークンの分だけ計算します。キャッシュなしでは毎ステップ"
                "接頭辞全体を計算し直します。",
                "The KV cache stores every layer's past keys and values, so each step computes only the new token; "
                "without it every step recomputes the whole prefix."),
        why=_p("推論高速化の要です。その代わりメモリを使い、その量は式で決まります。",
               "It is the key to fast inference; it costs memory, and the formula tells how much."),
        eq=[r"\text{bytes/token}=2\times L\times H_{kv}\times d_{head}\times\text{bytes per value}",
            r"\text{cost without cache}\propto\sum_{t=1}^{n}t=O(n^2),\quad\text{with cache}\ O(n)"],
        code=["dodai/nn/kv_cache.py::KVCache.update", "dodai/experiments/r5_5.py::decode_cached"],
        next=_p("`dodai bench generate` で SmolLM2 のキャッシュ有無の速度を測る。",
                "Measure SmolLM2 with and without the cache: `dodai bench generate`."),
    ),
    "R6.1": dict(
        what=_p("BERT は双方向のエンコーダで、文中の [MASK] を前後両方の文脈から当てる MLM で事前学習します。dodai は本物の"
                "all-MiniLM-L6-v2 の重みも読み込みます。",
                "BERT is a bidirectional encoder pre-trained by masked language modelling: predict [MASK] from "
                "both sides. dodai also loads the real all-MiniLM-L6-v2 weights."),
        why=_p("分類・検索（埋め込み）にはエンコーダが強みを持ちます。",
               "Encoders are strong at classification and retrieval (embeddings)."),
        eq=[r"L_{\mathrm{MLM}}=-\sum_{i\in\mathcal M}\log p(x_i\mid x_{\setminus\mathcal M})"],
        code=["dodai/train/mlm.py::mask_tokens"],
        next=_p("`dodai embed` で 2 文の埋め込みの近さを比べる。", "Compare two sentences with `dodai embed`."),
    ),
    "R6.2": dict(
        what=_p("GPT 系のデコーダは因果マスク付きの Transformer で、次トークンを予測します。本物の SmolLM2-135M-Instruct を"
                "GGUF から dodai の Llama 実装に読み込み、HF と同じロジットを出します。",
                "A GPT-style decoder is a causally masked Transformer that predicts the next token. The real "
                "SmolLM2-135M-Instruct loads from its GGUF file into dodai's Llama and gives HF's logits."),
        why=_p("チャットする LLM はこの形です。", "Every chat LLM has this shape."),
        eq=[r"p(x_{t+1}\mid x_{\le t})=\operatorname{softmax}(h_t^{(L)}W_E^\top)"],
        code=["dodai/models/decoder.py::Block.forward"],
        next=_p("`dodai chat --model smollm2-135m-instruct` で話しかける。",
                "Chat with it: `dodai chat --model smollm2-135m-instruct`."),
    ),
    "R6.3": dict(
        what=_p("T5 はエンコーダ・デコーダ型で、相対位置バイアスを使い、スパン破損（文の一部を隠して復元）で事前学習します。"
                "FLAN 式の指示チューニングで複数のタスクを指示文付きで学び、学習していないタスクで評価します。",
                "T5 is an encoder–decoder with relative position bias, pre-trained by span corruption; FLAN-style "
                "instruction tuning trains several tasks phrased as instructions and is evaluated on unseen ones."),
        why=_p("翻訳・要約のような入力→出力の変換に向く構造です。",
               "The natural shape for input→output tasks like translation and summarisation."),
        eq=[r"\mathrm{score}_{ij}=q_i^\top k_j+b_{h,\mathrm{bucket}(j-i)}"],
        code=["dodai/nn/relative_bias.py::relative_position_bucket"],
        next=_p("学習していないタスクの表で、損失と正解率がどう違うかを見る。",
                "Look at the held-out task rows: loss moves, does the score?"),
    ),
    "R6.4": dict(
        what=_p("ALiBi と RoPE は、埋め込みに位置を足す代わりに Attention のスコアに位置を入れる方法です（R4.3 と同じ実験）。",
                "ALiBi and RoPE put position into the attention scores instead of the embeddings (the same "
                "experiment as R4.3)."),
        why=_p("長文への外挿と KV キャッシュとの相性が良い方法です。",
               "They extrapolate better and fit naturally with a KV cache."),
        eq=[r"\mathrm{score}_{ij}=q_i^\top k_j/\sqrt d-m_h\,(i-j),\quad m_h=2^{-8h/H}"],
        code=["dodai/nn/position.py::alibi_slopes"],
        next=_p("R4.3 のページの外挿表を見る。", "See the extrapolation table on the R4.3 page."),
    ),
    "R6.5": dict(
        what=_p("疎な Attention は一部のキーだけを見ます。Mistral のスライディング窓は直前 w トークン、Longformer は局所窓に"
                "少数のグローバルトークンを加えます。メモリは長さに比例して増えます。",
                "Sparse attention looks at only some keys: Mistral's sliding window the last w tokens, Longformer a "
                "local window plus a few global tokens; memory grows linearly with length."),
        why=_p("長い文脈を扱うときの計算量の壁 O(T²) を越える方法です。",
               "A way past attention's O(T²) wall for long contexts."),
        eq=[r"M_{ij}=\begin{cases}0 & i-w<j\le i\\ -\infty & \text{otherwise}\end{cases}"],
        code=["dodai/nn/sparse.py::sliding_window_mask", "dodai/nn/sparse.py::longformer_mask"],
        next=_p("長さを 4 倍にしたときのメモリと時間の伸びを表で比べる。",
                "Compare memory and time growth at 4× the length."),
    ),
    "R7.1": dict(
        what=_p("RAG は質問に関係する文書を検索してプロンプトに入れ、根拠付きで答えさせます。BM25（単語一致）と密ベクトル"
                "（dodai の MiniLM）を逆順位融合で組み合わせます。",
                "Retrieval-augmented generation finds documents for the question and puts them in the prompt for a "
                "cited answer; BM25 (word overlap) and dense retrieval (dodai's MiniLM) are fused by reciprocal "
                "rank."),
        why=_p("モデルが覚えていない知識を、出典付きで使えます。", "The model can use knowledge it never memorised, with sources."),
        eq=[r"\mathrm{BM25}(q,d)=\sum_{t\in q}\mathrm{idf}(t)\frac{f(t,d)(k_1+1)}{f(t,d)+k_1(1-b+b|d|/\overline{|d|})}",
            r"\mathrm{RRF}(d)=\sum_{r}\frac{1}{k+\mathrm{rank}_r(d)}"],
        code=["dodai/rag/bm25.py::BM25.scores", "dodai/rag/hybrid.py::reciprocal_rank_fusion"],
        next=_p("`dodai rag index` と `dodai rag ask` を自分の文書で試す。",
                "Index your own documents with `dodai rag index` and ask."),
    ),
    "R7.2": dict(
        what=_p("プロンプト設計（テンプレート・few-shot・思考の連鎖）と、文法で出力を縛る制約付きデコード。JSON スキーマから"
                "作った文法に合わないトークンの確率を 0 にします。",
                "Prompt design (templates, few-shot, chain of thought) and constrained decoding: tokens that would "
                "break the grammar built from a JSON schema get probability 0."),
        why=_p("小さなモデルでも機械が読める出力を保証できます（保証は構成によるもので、内容の正しさではありません）。",
               "Even a small model can be guaranteed to emit machine-readable output — by construction, not by "
               "being right."),
        eq=[r"p'(x_t)\propto p(x_t)\,\mathbb{1}[x_{\le t}\ \text{is a prefix of the language}]"],
        code=["dodai/generate/constrained.py::RegexDFA.walk"],
        next=_p("制約なしの few-shot で JSON の正しさがどれだけ上がるかを比べる。",
                "See how much few-shot alone improves JSON validity without constraints."),
    ),
    "R7.3": dict(
        what=_p("エージェントは「考える→ツールを呼ぶ→結果を見る」を繰り返します。ReAct 形式と関数呼び出し形式を、"
                "ステップ数・トークン数・時間の上限付きで実装します。",
                "An agent loops think → call a tool → observe. ReAct and function calling are implemented with "
                "step, token and time limits."),
        why=_p("LLM が計算や検索を道具に任せられるようになります。", "The model hands arithmetic and lookups to tools."),
        eq=[r"s_{k+1}=s_k\oplus(\text{thought}_k,\ \text{call}_k,\ \text{observation}_k)"],
        code=["dodai/agents/loop.py::run_agent"],
        next=_p("`dodai agent \"What is 4821 * 377?\" --tools calculator --verbose` で手順を見る。",
                "Watch the steps: `dodai agent \"What is 4821 * 377?\" --tools calculator --verbose`."),
    ),
    "R7.4": dict(
        what=_p("会話の記憶：トークン予算内の会話バッファ、古い発話の要約、埋め込みで検索する長期ベクトル記憶。",
                "Memory for conversations: a token-budget buffer, rolling summaries of evicted turns, and a "
                "long-term vector memory searched by embedding."),
        why=_p("文脈窓より長い会話で、昔の事実を取り戻せます（使えるかはモデル次第）。",
               "Facts older than the context window can come back (whether the model uses them is another matter)."),
        eq=[r"\mathrm{sim}(q,m)=\frac{e_q^\top e_m}{\|e_q\|\|e_m\|}"],
        code=["dodai/memory/vector.py::VectorMemory.search"],
        next=_p("`dodai chat --memory mem/` で事実を教えてから長く話し、後で尋ねる。",
                "Tell `dodai chat --memory mem/` a fact, talk for a while, then ask."),
    ),
    "R7.5": dict(
        what=_p("ツール：正確な電卓、サンドボックス内の Python、読み取り専用 SQL、文書検索。敵対的な入力に対して安全であること"
                "を攻撃の一覧で確かめます。",
                "Tools: an exact calculator, sandboxed Python, read-only SQL and document search, checked against a "
                "list of named attacks."),
        why=_p("ツールは LLM の能力を広げますが、同時に攻撃面にもなります。",
               "Tools extend what an LLM can do — and what an attacker can."),
        eq=[r"\text{safe}(t)\iff\forall a\in\mathcal{A}:\ \text{refused}(t,a)\ \lor\ \text{bounded}(t,a)"],
        code=["dodai/tools/calculator.py::evaluate"],
        next=_p("`dodai tool run python --args '{\"code\": \"print(1)\"}'` で試す。",
                "Try `dodai tool run python --args '{\"code\": \"print(1)\"}'`."),
    ),
    "R8.1": dict(
        what=_p("幻覚（もっともらしい誤り）への対策：トークンのエントロピーや系列対数確率で不確かさを測り、低いときは答えない。"
                "根拠文と照合する検査も行います。",
                "Against hallucination: measure uncertainty by token entropy or sequence log-probability and "
                "abstain when it is low; check answers against their source text."),
        why=_p("「わからない」と言えるモデルは信頼できます。", "A model that can say \"I don't know\" can be trusted more."),
        eq=[r"H_t=-\sum_v p_t(v)\log p_t(v),\qquad \log p(y\mid x)=\sum_t\log p(y_t\mid x,y_{<t})",
            r"\mathrm{AUROC}=P(s(\text{correct})>s(\text{wrong}))"],
        code=["dodai/safety/hallucination.py::token_uncertainty"],
        next=_p("棄権のしきい値を変えると、答える割合と正解率がどう交換されるかを見る。",
                "Move the abstention threshold and watch coverage trade against accuracy."),
    ),
    "R8.2": dict(
        what=_p("ジェイルブレイク（ルール回避攻撃）への防御：特殊トークンの注入を防ぎ、入力・出力のガードで攻撃を止め、"
                "事前に固定した検証用の攻撃で成功率と誤検知率を測ります。",
                "Against jailbreaks: stop special-token injection, block attacks with input and output guards, and "
                "measure attack success and false refusals on a held-out attack split fixed in advance."),
        why=_p("ガードを作った攻撃だけで測ると過大評価になります。未見の攻撃で測るのが本当の評価です。",
               "Measured on the attacks it was built against, a guard looks better than it is; unseen attacks "
               "are the real test."),
        eq=[r"\mathrm{ASR}=\frac{\#\{\text{attacks that succeed}\}}{\#\{\text{attacks}\}}"],
        code=["dodai/safety/guards.py::neutralise_specials"],
        next=_p("検証用の攻撃の表で、どの系統がガードをすり抜けるかを見る。",
                "See which attack families slip through on the held-out split."),
    ),
    "R8.3": dict(
        what=_p("データバイアス：WEAT は 2 つの語群と 2 つの属性語群の関連の差を効果量で測ります。反事実テスト（性別語を"
                "入れ替える）と BBQ 形式の質問で言語モデルも測ります。",
                "Data bias: WEAT measures, as an effect size, how differently two word sets associate with two "
                "attribute sets; counterfactual swaps and BBQ-style questions test the language model."),
        why=_p("公平性と説明責任は、測れる形にして初めて改善できます。",
               "Fairness and accountability improve only once they are measured."),
        eq=[r"s(w,A,B)=\operatorname{mean}_{a\in A}\cos(w,a)-\operatorname{mean}_{b\in B}\cos(w,b)",
            r"d=\frac{\operatorname{mean}_{x\in X}s(x,A,B)-\operatorname{mean}_{y\in Y}s(y,A,B)}"
            r"{\operatorname{std}_{w\in X\cup Y}s(w,A,B)}"],
        code=["dodai/safety/bias.py::association", "dodai/safety/bias.py::effect_size_from_scores"],
        next=_p("WEAT の表で、公表値と向きが合わない検定を探す。",
                "Find the WEAT tests whose direction differs from the published one."),
    ),
    "R9.1": dict(
        what=_p("Self-Attention 1 層を式ごとに、モデル自身の値と素の torch 演算での再計算を並べて確かめます（詳しくは"
                " docs/self_attention.md）。",
                "One self-attention layer, equation by equation, recomputed with plain torch ops next to the "
                "model's own tensors (in full in docs/self_attention.md)."),
        why=_p("おすすめ深堀り順の第一歩です。式とコードが一対一で対応していることを自分で確かめられます。",
               "The first step of the deep-dive order: check for yourself that equations and code match."),
        eq=[r"Q=\hat xW_q^\top,\ K=\hat xW_k^\top,\ V=\hat xW_v^\top",
            r"A=\operatorname{softmax}\!\Big(\frac{\mathrm{RoPE}(Q)\,\mathrm{RoPE}(K)^\top}{\sqrt d}+M\Big),"
            r"\quad y=\operatorname{Concat}_h(AV)W_o^\top"],
        code=["dodai/models/decoder.py::Attention.forward"],
        next=_p("docs/self_attention.md を読みながら `dodai roadmap run R9.1` の表を見る。",
                "Read docs/self_attention.md beside the R9.1 table."),
    ),
    "R9.2": dict(
        what=_p("小さな VLM：画像をパッチ（実験では 8 ピクセルのセルごとに CNN の stem）でトークンにし、ViT で符号化し、"
                "MLP で言語モデルの埋め込みに写して、キャプションの前に並べます（LLaVA 方式）。本物の手書き数字で作った"
                "場面を説明させます。",
                "A small vision-language model: the image becomes tokens, one per patch (in the experiment a "
                "convolutional stem on each 8-pixel cell), encoded by a ViT, projected by an MLP into the language "
                "model's embedding space and put before the caption (as in LLaVA); it describes scenes made of real "
                "handwritten digits."),
        why=_p("画像を「トークン」にすれば、言語モデルはそのまま画像を読めます。",
               "Turn an image into tokens and the language model reads it unchanged."),
        eq=[r"z=\mathrm{ViT}(\operatorname{patchify}(I)),\quad e_{\mathrm{img}}=\mathrm{MLP}(z)",
            r"L=-\sum_{t\in\text{caption}}\log p(y_t\mid e_{\mathrm{img}},y_{<t})"],
        code=["dodai/models/vlm.py::patchify", "dodai/models/vlm.py::VLM.image_prefix"],
        next=_p("多数派ベースラインと比べて、どのスロットが画像から学ばれているかを見る。",
                "Against the majority baseline: which slots are really learned from the image?"),
    ),
    "R9.3": dict(
        what=_p("BERT と GPT の違いは Attention のマスクです。同じ文で、空欄の右側の単語を変えると BERT の予測は変わり、"
                "GPT の予測は変わりません。マスクはモデルの出力から測ります（トークン j を替えて、どの位置の出力が動くか）。",
                "BERT and GPT differ in their attention mask. On the same sentence, changing a word right of the "
                "blank changes BERT's prediction and never GPT's. The masks are measured from the models' outputs "
                "(replace token j, see which positions move)."),
        why=_p("ロードマップの 3 ステップ（入門→構造理解→実践）はこの本の目次そのものです。",
               "The roadmap's three steps (first steps → structure → practice) are this book's table of "
               "contents."),
        eq=[r"D_{ij}=\mathbb{1}\big[\|f(x)_i-f(x^{(j)})_i\|_\infty>10^{-6}\big],\quad"
            r" x^{(j)}=x\text{ with token }j\text{ replaced}"],
        code=["dodai/experiments/r9_3.py::dependency_matrix"],
        next=_p("`dodai roadmap book --out site/` でこの本を作り直す。",
                "Rebuild this book: `dodai roadmap book --out site/`."),
    ),
}
