// edgeocr CloudFront Function (viewer request) on the /ocr* behaviour, runtime cloudfront-js-2.0.
// infra/template.yaml inlines this file as OcrBodyLimitFunction's FunctionCode: keep the two
// identical (tests/test_template.py compares them and runs this file under node).
//
// A POST /ocr body that cannot fit Lambda's 6 MB synchronous invoke payload (the whole event
// JSON, base64 body included) never reaches the function: the HTTP API would answer its own
// non-JSON 413. Here the edge answers our JSON 413 too_many_bytes instead, from Content-Length
// alone (a function cannot read the body). 6,291,556 bytes of payload, less 16 KiB for the
// event's headers and request context, times 3/4 for base64: 4,706,379 bytes; 4,700,000 keeps
// a little more room. The app's own OCR_MAX_BYTES is lower, so bodies between the two still
// get the app's 413. A chunked upload has no Content-Length and passes through (API Gateway's
// 413 then). Every other request (GET /ocr/{hash}, ...) passes untouched.
var MAX_INVOKE_BODY = 4700000;

function handler(event) {
    var request = event.request;
    if (request.method !== 'POST' || request.uri !== '/ocr') {
        return request;
    }
    var header = request.headers['content-length'];
    var length = header ? parseInt(header.value, 10) : NaN;
    if (!(length > MAX_INVOKE_BODY)) {
        return request;
    }
    var message = 'the request body is ' + length + ' bytes; POST /ocr carries at most ' +
        MAX_INVOKE_BODY + ' (Lambda\'s 6 MB payload after base64): send larger files with ' +
        'POST /uploads';
    return {
        statusCode: 413,
        statusDescription: 'Payload Too Large',
        headers: {
            'content-type': { value: 'application/json' },
            'cache-control': { value: 'no-store' }
        },
        body: {
            encoding: 'text',
            data: JSON.stringify({ error: { code: 'too_many_bytes', message: message } })
        }
    };
}
