// Module candidates benchmarks JSON tokenizers on firehose's bodies (issue
// 9): jsonscan against today's walker and the libraries considered. It is a
// module of its own so that firehose does not depend on the libraries.
module firehose/internal/jsonscan/candidates

go 1.26.8

require (
	firehose v0.0.0
	github.com/go-json-experiment/json v1.27.2
	github.com/tidwall/gjson v1.20.3
	github.com/valyala/fastjson v1.6.10
)

require (
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.3.0 // indirect
)

replace firehose => ../../..
