"""The HTML report's parts: the plots (:mod:`lowering.reporting.plots`, static SVG drawn by matplotlib, an
optional dependency: ``pip install 'lowering[report]'``) and the data they are drawn from
(:mod:`lowering.reporting.data`). The page itself and the ``lower report`` command are
:mod:`lowering.report_html`."""
