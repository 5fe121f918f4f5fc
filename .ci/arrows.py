#!/usr/bin/env python3
"""Checks that no module of src/ imports a module that imports it back
(directly or round a longer loop), reading the `use` lines. Exit 1 on a cycle."""
import re,os,sys,glob
root=os.path.join(os.path.dirname(os.path.abspath(__file__)),'..','src')
root=os.path.normpath(root)
mods={}
def modpath(f):
    p=f[len(root)+1:-3].split('/')
    if p[-1]=='mod': p=p[:-1]
    if p==['lib'] or p==['main']: return 'crate'
    return 'crate::'+'::'.join(p)
files=[f for f in glob.glob(root+'/**/*.rs',recursive=True) if '/src/cmd/' not in f and not f.endswith('main.rs')]
allmods={modpath(f) for f in files}
edges={}
for f in files:
    m=modpath(f); s=open(f).read()
    s=re.sub(r'#\[cfg\(test\)\]\s*mod tests \{.*','',s,flags=re.S)
    # Comments (doc links name modules without importing them).
    s=re.sub(r'//[^\n]*','',s)
    deps=set()
    for u in re.findall(r'(?:crate|super)(?:::[A-Za-z_]+)+',s):
        parts=u.split('::')
        if parts[0]=='super':
            base=m.split('::')
            base=base[:-1]
            parts=base+parts[1:]
        # longest prefix that is a module
        for k in range(len(parts),0,-1):
            cand='::'.join(parts[:k])
            if cand in allmods: 
                if cand!=m: deps.add(cand)
                break
    # child modules declared via `mod x;` with `use x::` imports
    for u in re.findall(r'^use ([a-z_]+)::',s,flags=re.M):
        cand=(m+'::'+u) if m!='crate' else 'crate::'+u
        if cand in allmods: deps.add(cand)
    edges[m]=deps
bad=[(a,b) for a in edges for b in edges[a] if a in edges.get(b,set())]
for a,b in sorted(bad):
    if a<b: print('CYCLE',a,'<->',b)
# strongly connected components (longer cycles)
idx={};low={};st=[];on=set();out=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in edges: continue
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1: out.append(comp)
for v in edges:
    if v not in idx: sc(v)
for comp in out: print('SCC',sorted(comp))
if '-v' in sys.argv:
    for a in sorted(edges): print(a,'->',sorted(edges[a]))
print(len(edges),'modules checked, no import cycles' if not bad and not out else 'import cycles found')
sys.exit(1 if bad or out else 0)
