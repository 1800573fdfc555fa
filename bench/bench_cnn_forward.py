"""The CNN forward variants behind models.KimCNN.forward, timed on real training steps (bf16 autocast, fused Adam, masks).

    python bench/bench_cnn_forward.py

cur: cast once + ReLU map + amax (the forward before the pooling change); nocontig: the same without .contiguous();
relu_after: ReLU after the pooling; maxidx: ReLU after max-with-indices (what ships); pool: adaptive_max_pool1d.
Prints the median seconds of 40 steps over 3 interleaved rounds (a hand check, not a RESULTS.md section).
"""
import torch, time, sys
import torch.nn.functional as F
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import common as C
from ticketkit import train as T
from ticketkit.models import create_model, KimCNN
from bench_engine import masks_at
d=C.load(3000); vocab=d.tokenizer.get_vocab_size()
idx=list(T.batches(d.train,64,T.epoch_generator(0,0),True))
def inp(self, ids, contig=True):
    x = self.embedding(ids)
    if torch.is_autocast_enabled('cpu'): x = x.to(torch.bfloat16)
    x = x.transpose(1, 2)
    return x.contiguous() if contig else x
def v_cur(self, ids, l):
    x = inp(self, ids)
    h = torch.cat([F.relu(c(x)).amax(dim=2) for c in self.convs], dim=1)
    return self.fc(self.dropout(h))
def v_nocontig(self, ids, l):
    x = inp(self, ids, False)
    h = torch.cat([F.relu(c(x)).amax(dim=2) for c in self.convs], dim=1)
    return self.fc(self.dropout(h))
def v_relu_after(self, ids, l):
    x = inp(self, ids)
    h = F.relu(torch.cat([c(x).amax(dim=2) for c in self.convs], dim=1))
    return self.fc(self.dropout(h))
def v_maxidx(self, ids, l):
    x = inp(self, ids)
    h = F.relu(torch.cat([c(x).max(dim=2).values for c in self.convs], dim=1))
    return self.fc(self.dropout(h))
def v_pool(self, ids, l):
    x = inp(self, ids)
    h = F.relu(torch.cat([F.adaptive_max_pool1d(c(x), 1).squeeze(2) for c in self.convs], dim=1))
    return self.fc(self.dropout(h))
V={'cur':v_cur,'nocontig':v_nocontig,'relu_after':v_relu_after,'maxidx':v_maxidx,'pool':v_pool}
m=create_model('cnn',vocab,seed=0); masks=masks_at('cnn',vocab,1.0); mk=T.Masker(m,masks)
opt=torch.optim.Adam(m.parameters(),lr=5e-3,fused=True)
def run(f, n=40):
    KimCNN.forward=f
    t=time.perf_counter()
    for i in idx[:n]:
        ids,l,y=T.take(d.train,i,torch.device('cpu'))
        with torch.autocast('cpu',dtype=torch.bfloat16):
            out=m(ids,l)
        loss=F.cross_entropy(out.float(),y)
        opt.zero_grad(set_to_none=True); loss.backward(); mk.grads(); opt.step(); mk.weights()
    return time.perf_counter()-t
for f in V.values(): run(f,5)
res={k:[] for k in V}
for r in range(3):
    for k,f in V.items(): res[k].append(run(f))
for k,v in res.items(): print(k, sorted(v)[1], [round(x,2) for x in v])
