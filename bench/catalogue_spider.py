"""The benchmark spider for `scraper crawl bench/catalogue_spider.py`: the one that
`scraper bench` uses (one item per page, every link followed), under a name of its own."""

from scraper.benchmark import BenchCatalogue as _BenchCatalogue


class BenchCatalogue(_BenchCatalogue):
    name = "bench_catalogue"
